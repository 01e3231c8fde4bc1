-- The customer feature table: every feature group joined on customer_id.
-- Grain: one row per customer in population, ordered by customer_id.
-- Cutoff and nulls: as documented in each group's file.
SELECT p.customer_id,
       pr.tenure_days, pr.consent_email, pr.consent_sms,
       v.recency_days, v.frequency, v.monetary_sum, v.monetary_avg,
       v.purchases_30d, v.purchases_90d, v.purchases_365d,
       v.spend_30d, v.spend_90d, v.spend_365d, v.spend_prev_90d,
       v.refunds_365d, v.refund_amount_365d, v.interpurchase_days_mean, v.interpurchase_days_cv,
       v.recency_vs_usual_gap, v.spend_trend_90d,
       e.emails_sent_30d, e.email_open_rate_30d, e.email_click_rate_30d,
       e.emails_sent_90d, e.email_open_rate_90d, e.email_click_rate_90d,
       e.sms_sent_90d, e.sms_click_rate_90d,
       e.web_visits_30d, e.app_sessions_30d, e.web_visits_90d, e.app_sessions_90d, e.engagement_trend, e.days_since_last_engagement,
       s.calls_inbound_90d, s.calls_outbound_90d, s.call_minutes_90d, s.complaints_90d,
       s.days_since_last_complaint,
       ch.purchase_share_web, ch.purchase_share_store, ch.purchase_share_app,
       ch.interaction_share_web, ch.interaction_share_app, ch.interaction_share_email,
       ch.interaction_share_call_center, ch.interaction_share_store,
       ch.channels_used_365d, ch.omnichannel, ch.preferred_channel,
       ct.contacts_7d, ct.contacts_30d, ct.contacts_90d, ct.days_since_last_contact,
       ct.responses_90d, ct.days_since_last_response, ct.funnel_depth_wave, ct.funnel_depth_trigger,
       l.lifecycle_stage
FROM population p
JOIN profile_features pr ON pr.customer_id = p.customer_id
JOIN value_features v ON v.customer_id = p.customer_id
JOIN engagement_features e ON e.customer_id = p.customer_id
JOIN service_features s ON s.customer_id = p.customer_id
JOIN channel_features ch ON ch.customer_id = p.customer_id
JOIN contact_features ct ON ct.customer_id = p.customer_id
JOIN lifecycle_features l ON l.customer_id = p.customer_id
ORDER BY p.customer_id
