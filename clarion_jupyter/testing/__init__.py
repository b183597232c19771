"""Helpers for testing Clarion workflows offline (also for users' own test suites)."""

from .openai_server import OpenAIStubServer

__all__ = ["OpenAIStubServer"]
