-- A run's cost budget: its limits, what its LLM calls spent, and the holds of the calls in
-- flight (JSON), rewritten with each transition that changes it, so a resumed run keeps it.
ALTER TABLE runs ADD COLUMN budget VARCHAR;
