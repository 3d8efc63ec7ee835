"""Test helpers shipped in the package: conformance suites every backend must pass."""
