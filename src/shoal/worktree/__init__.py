"""shoal.worktree"""
