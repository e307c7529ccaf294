"""shoal.testing"""
