-- Iterating on runs: a re-run names the run it came from and what it changed; a step it
-- took over from that run names the attempt it copied (set once, when the row is written).
ALTER TABLE runs ADD COLUMN parent_run_id VARCHAR;
ALTER TABLE runs ADD COLUMN changes VARCHAR;
ALTER TABLE step_runs ADD COLUMN reused_from VARCHAR;
