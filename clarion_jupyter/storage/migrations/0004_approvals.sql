-- A step attempt held for a person's decision keeps what they are shown (the preview), the
-- message and when it was asked, so a restart keeps the run waiting with its preview.
ALTER TABLE step_runs ADD COLUMN approval VARCHAR;
