"""shoal.crypto"""
