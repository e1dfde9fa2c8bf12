"""From results to words: the findings (schema, validation, de-identification), the built-in report writer, LLM
backends and their reports, and the claim-by-claim grounding check (verify)."""
