"""Pydantic models shared by every part of the service."""
