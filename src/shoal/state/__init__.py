"""shoal.state"""
