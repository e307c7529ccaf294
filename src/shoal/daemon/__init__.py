"""shoal.daemon"""
