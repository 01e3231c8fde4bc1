-- Lifecycle transitions: how many customers moved from one stage to another
-- between consecutive cutoffs (the matrix marketers track), from
-- lifecycle_history (sql/lifecycle/history.sql).
-- Grain: one row per cutoff after the first, from_stage and to_stage.
-- from_stage NULL: customers who signed up since the previous cutoff.
-- Stage counts at a cutoff are the sums of `customers` by to_stage.
SELECT as_of, previous_stage AS from_stage, lifecycle_stage AS to_stage, count(*) AS customers
FROM lifecycle_history
WHERE as_of > (SELECT min(as_of) FROM lifecycle_history)
GROUP BY as_of, previous_stage, lifecycle_stage
