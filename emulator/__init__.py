"""The local ARM emulator: the embedded cloud, speaking the Azure Resource Manager REST protocol."""
