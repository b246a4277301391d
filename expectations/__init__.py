"""Great Expectations suites (JSON, reviewed like code) and the validation entry point.

- `suites/*.json`: the stored suites, made by `build_suites` from the dataset contract.
- `validate.validate_dataset`: run them on every split, build Data Docs, return a report.
- `quarantine`: mark a failed folder (nothing moved or deleted) and refuse it later.
"""
