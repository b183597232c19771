-- The durable half of every group commit. A commit appends the new state of each run and
-- step attempt it changed here (one cheap INSERT) next to its events, instead of updating
-- `runs` and `step_runs` row by row; a projection folds the journal into those tables in
-- the background, and before any query reads them. `row` is the table row as a JSON array.
CREATE TABLE run_journal (
    id BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    row VARCHAR NOT NULL
);
