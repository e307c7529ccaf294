"""shoal.hub"""
