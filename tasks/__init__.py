"""Prefect tasks: thin @task wrappers (retries, caching, logging) around one library call each."""
