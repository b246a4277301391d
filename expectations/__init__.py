"""Great Expectations suites (JSON, reviewed like code) and the validation entry point."""
