"""shoal.webdav"""
