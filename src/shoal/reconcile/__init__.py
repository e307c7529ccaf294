"""shoal.reconcile"""
