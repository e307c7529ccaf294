"""shoal.vfs"""
