"""shoal.mount"""
