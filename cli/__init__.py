"""The command line: submit, follow and list workspace requests; put messages on the onboarding queue."""
