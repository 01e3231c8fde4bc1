-- What an audience's suppressions need to know about each CRM customer,
-- as of $as_of, for campaign $campaign_id (see docs/nightly.md, "Audiences").
-- Grain: one row per customer of the customers table.
-- consent_email/sms/call  the customer's consent (NULL = no consent)
-- recent_contacts         treatment contacts of any campaign in the
--                         $cap_days days before the cutoff
-- responded_recently      a response to any campaign in the $responded_days
--                         days before the cutoff
-- in_running_campaign     contacted (treatment) by another campaign that is
--                         running at the cutoff (start_date <= as_of <=
--                         end_date; a missing date is open)
-- in_cooldown             already selected (either group) by this campaign
--                         in the $cooldown_days days before the cutoff
WITH before AS (
  SELECT campaign_id, customer_id, ts, "group",
         (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 AS days_ago
  FROM contacts
  WHERE ts < $as_of
),
recent AS (
  SELECT customer_id, count(*) AS contacts
  FROM before
  WHERE "group" = 'treatment' AND days_ago <= $cap_days
  GROUP BY customer_id
),
responded AS (
  SELECT DISTINCT customer_id
  FROM responses
  WHERE ts < $as_of AND (date_part('epoch', $as_of) - date_part('epoch', ts)) / 86400.0 <= $responded_days
),
running AS (
  SELECT DISTINCT b.customer_id
  FROM before b
  JOIN campaigns c ON c.campaign_id = b.campaign_id
  WHERE b.campaign_id <> $campaign_id AND b."group" = 'treatment'
    AND (c.start_date IS NULL OR c.start_date <= $as_of)
    AND (c.end_date IS NULL OR c.end_date >= $as_of)
),
cooldown AS (
  SELECT DISTINCT customer_id
  FROM before
  WHERE campaign_id = $campaign_id AND days_ago <= $cooldown_days
)
SELECT cu.customer_id,
       cu.consent_email, cu.consent_sms, cu.consent_call,
       coalesce(r.contacts, 0) AS recent_contacts,
       p.customer_id IS NOT NULL AS responded_recently,
       n.customer_id IS NOT NULL AS in_running_campaign,
       k.customer_id IS NOT NULL AS in_cooldown
FROM customers cu
LEFT JOIN recent r ON r.customer_id = cu.customer_id
LEFT JOIN responded p ON p.customer_id = cu.customer_id
LEFT JOIN running n ON n.customer_id = cu.customer_id
LEFT JOIN cooldown k ON k.customer_id = cu.customer_id
ORDER BY cu.customer_id
