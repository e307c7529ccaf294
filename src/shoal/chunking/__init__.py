"""shoal.chunking"""
