"""The Azure provider: one reconcile per step kind, Azure error translation. Imported by the step worker only."""
