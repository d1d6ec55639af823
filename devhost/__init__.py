"""The embedded runtime: API, queue workers and the ARM emulator in one process."""
