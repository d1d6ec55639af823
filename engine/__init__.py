"""The core: policy, planner, submission and the step engine. Imports ports, never SDKs."""
