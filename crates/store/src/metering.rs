//! Usage events, daily rollups and monthly budget ledgers.

use crate::audit::{self, AuditEntry};
use crate::{Store, StoreError};
use ragvault_core::TenantId;
use serde::Serialize;
use sqlx::Row;
use time::{Date, OffsetDateTime};

/// One provider call, as metered (never a key, never text).
#[derive(Clone, Debug)]
pub struct NewUsageEvent {
    pub at: OffsetDateTime,
    pub tenant_id: TenantId,
    /// `api_key:<id>`, `widget:<token id>`.
    pub principal: String,
    pub request_id: Option<String>,
    /// `generation` or `embedding`.
    pub kind: &'static str,
    pub provider: String,
    pub model: String,
    pub key_version: Option<u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micro_usd: u64,
    pub latency_ms: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `ok`, or a short failure class (`error`, `stream_cut`).
    pub outcome: &'static str,
}

/// How `/v1/admin/usage` groups rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageGrouping {
    Day,
    Model,
    Provider,
    /// Per day and model (the dashboard's chart and table).
    DayModel,
}

/// Totals for one group of the usage report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsageTotals {
    pub tenant_id: TenantId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
}

/// A tenant's ledger for one month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BudgetMonth {
    pub committed_micro_usd: i64,
    pub spent_micro_usd: i64,
    pub soft_alerted: bool,
}

/// The first day of `at`'s month (UTC): budget months are calendar months.
pub fn month_of(at: OffsetDateTime) -> Date {
    at.date().replace_day(1).unwrap_or(at.date())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// Writes a batch of usage events and audit events in one transaction, with their daily rollups and the
    /// spend of each tenant's month. Returns each touched (tenant, month) with its spend after the batch.
    pub async fn record_usage_batch(
        &self,
        events: &[NewUsageEvent],
        audits: &[AuditEntry],
    ) -> Result<Vec<(TenantId, Date, i64)>, StoreError> {
        self.record_journal_batch(events, audits, None).await
    }

    /// Like [`Store::record_usage_batch`], also moving a metering journal segment's commit mark to
    /// `(segment, committed_seq)` in the same transaction.
    ///
    /// One statement (so one round trip, in its own transaction): every part is a data-modifying `WITH`
    /// query over the same arrays. The writer used to send BEGIN, the mark, the events, one upsert per
    /// daily rollup and per month, the audit events and COMMIT, each waiting for the last; on a 2-core
    /// machine those round trips were a share of ragvault's CPU per call under load.
    pub async fn record_journal_batch(
        &self,
        events: &[NewUsageEvent],
        audits: &[AuditEntry],
        mark: Option<(&str, i64)>,
    ) -> Result<Vec<(TenantId, Date, i64)>, StoreError> {
        let mut at = Vec::with_capacity(events.len());
        let mut tenant = Vec::with_capacity(events.len());
        let mut principal = Vec::with_capacity(events.len());
        let mut request_id = Vec::with_capacity(events.len());
        let mut kind = Vec::with_capacity(events.len());
        let mut provider = Vec::with_capacity(events.len());
        let mut model = Vec::with_capacity(events.len());
        let mut key_version = Vec::with_capacity(events.len());
        let mut input = Vec::with_capacity(events.len());
        let mut output = Vec::with_capacity(events.len());
        let mut cost = Vec::with_capacity(events.len());
        let mut latency = Vec::with_capacity(events.len());
        let mut sent = Vec::with_capacity(events.len());
        let mut received = Vec::with_capacity(events.len());
        let mut outcome = Vec::with_capacity(events.len());
        for e in events {
            at.push(e.at);
            tenant.push(e.tenant_id.0);
            principal.push(e.principal.as_str());
            request_id.push(e.request_id.as_deref());
            kind.push(e.kind);
            provider.push(e.provider.as_str());
            model.push(e.model.as_str());
            key_version.push(e.key_version.map(to_i64));
            input.push(to_i64(e.input_tokens));
            output.push(to_i64(e.output_tokens));
            cost.push(to_i64(e.cost_micro_usd));
            latency.push(to_i64(e.latency_ms));
            sent.push(to_i64(e.bytes_sent));
            received.push(to_i64(e.bytes_received));
            outcome.push(e.outcome);
        }
        // Rollups are aggregated in the statement so a batch makes one upsert per group (ON CONFLICT may
        // touch a row once per statement); their ORDER BY gives every writer the same lock order. Days and
        // months are UTC. A tenant deleted while its call ran keeps its usage rows (for billing), not its
        // ledger. `$16`/`$17` are the journal mark (both NULL when there is none), `$18..` the audit events.
        let sql = format!(
            "WITH events AS (
                 SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                     $12::bigint[], $13::bigint[], $14::bigint[], $15::text[])
                     AS e(at, tenant_id, principal, request_id, kind, provider, model, key_version,
                          input_tokens, output_tokens, cost_micro_usd, latency_ms, bytes_sent,
                          bytes_received, outcome)
             ),
             mark AS (
                 INSERT INTO metering_journal_marks (segment, committed_seq)
                 SELECT $16::text, $17::bigint WHERE $16::text IS NOT NULL
                 ON CONFLICT (segment) DO UPDATE
                     SET committed_seq = GREATEST(metering_journal_marks.committed_seq,
                                                  EXCLUDED.committed_seq),
                         updated_at = now()
             ),
             usage AS (
                 INSERT INTO usage_events (at, tenant_id, principal, request_id, kind, provider, model,
                     key_version, input_tokens, output_tokens, cost_micro_usd, latency_ms, bytes_sent,
                     bytes_received, outcome)
                 SELECT * FROM events
             ),
             daily AS (
                 INSERT INTO usage_daily (tenant_id, day, provider, model, requests, errors, input_tokens,
                     output_tokens, cost_micro_usd)
                 SELECT tenant_id, (at AT TIME ZONE 'UTC')::date, provider, model, count(*),
                        count(*) FILTER (WHERE outcome <> 'ok'), sum(input_tokens)::bigint,
                        sum(output_tokens)::bigint, sum(cost_micro_usd)::bigint
                 FROM events GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
                 ON CONFLICT (tenant_id, day, provider, model) DO UPDATE SET
                     requests = usage_daily.requests + EXCLUDED.requests,
                     errors = usage_daily.errors + EXCLUDED.errors,
                     input_tokens = usage_daily.input_tokens + EXCLUDED.input_tokens,
                     output_tokens = usage_daily.output_tokens + EXCLUDED.output_tokens,
                     cost_micro_usd = usage_daily.cost_micro_usd + EXCLUDED.cost_micro_usd
             ),
             audit AS (
                 {audit}
             )
             INSERT INTO budget_months (tenant_id, month, spent_micro_usd)
             SELECT tenant_id, date_trunc('month', at AT TIME ZONE 'UTC')::date, sum(cost_micro_usd)::bigint
             FROM events WHERE EXISTS (SELECT 1 FROM tenants WHERE id = events.tenant_id)
             GROUP BY 1, 2 ORDER BY 1, 2
             ON CONFLICT (tenant_id, month) DO UPDATE
                 SET spent_micro_usd = budget_months.spent_micro_usd + EXCLUDED.spent_micro_usd
             RETURNING tenant_id, month, spent_micro_usd",
            audit = audit::insert_many_sql(18)
        );
        let query = sqlx::query(&sql)
            .bind(at)
            .bind(tenant)
            .bind(principal)
            .bind(request_id)
            .bind(kind)
            .bind(provider)
            .bind(model)
            .bind(key_version)
            .bind(input)
            .bind(output)
            .bind(cost)
            .bind(latency)
            .bind(sent)
            .bind(received)
            .bind(outcome)
            .bind(mark.map(|(segment, _)| segment))
            .bind(mark.map(|(_, seq)| seq));
        let rows = audit::bind_many(query, audits)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    TenantId(row.try_get("tenant_id")?),
                    row.try_get("month")?,
                    row.try_get("spent_micro_usd")?,
                ))
            })
            .collect()
    }

    /// The highest committed sequence number of a metering journal segment (0 when none is).
    pub async fn journal_mark(&self, segment: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT committed_seq FROM metering_journal_marks WHERE segment = $1")
                .bind(segment)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(row) => row.try_get("committed_seq")?,
            None => 0,
        })
    }

    /// Drops a segment's mark once its file is gone.
    pub async fn forget_journal_segment(&self, segment: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM metering_journal_marks WHERE segment = $1")
            .bind(segment)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Leases up to `want` micro-USD of `tenant`'s budget for `month` under `limit`; returns what was granted
    /// (0 when the month is fully committed). Atomic across replicas: the row is locked while deciding.
    pub async fn lease_budget(
        &self,
        tenant: TenantId,
        month: Date,
        want: u64,
        limit: u64,
    ) -> Result<u64, StoreError> {
        // A spent budget is seen without taking the row's lock (nor writing WAL for it): the check below is
        // repeated under the lock, this one only spares the refusals.
        let committed: Option<i64> = sqlx::query_scalar(
            "SELECT committed_micro_usd FROM budget_months WHERE tenant_id = $1 AND month = $2",
        )
        .bind(tenant.0)
        .bind(month)
        .fetch_optional(&self.pool)
        .await?;
        if committed.is_some_and(|c| c >= to_i64(limit)) {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO budget_months (tenant_id, month) VALUES ($1, $2)
             ON CONFLICT (tenant_id, month) DO NOTHING",
        )
        .bind(tenant.0)
        .bind(month)
        .execute(&mut *tx)
        .await?;
        let committed: i64 = sqlx::query(
            "SELECT committed_micro_usd FROM budget_months WHERE tenant_id = $1 AND month = $2
             FOR UPDATE",
        )
        .bind(tenant.0)
        .bind(month)
        .fetch_one(&mut *tx)
        .await?
        .try_get("committed_micro_usd")?;
        let room = to_i64(limit).saturating_sub(committed).max(0);
        let granted = room.min(to_i64(want));
        if granted > 0 {
            sqlx::query(
                "UPDATE budget_months SET committed_micro_usd = committed_micro_usd + $3
                 WHERE tenant_id = $1 AND month = $2",
            )
            .bind(tenant.0)
            .bind(month)
            .bind(granted)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(u64::try_from(granted).unwrap_or(0))
    }

    /// Gives back budget a replica leased but did not spend.
    pub async fn return_budget(
        &self,
        tenant: TenantId,
        month: Date,
        amount: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE budget_months SET committed_micro_usd = greatest(committed_micro_usd - $3, 0)
             WHERE tenant_id = $1 AND month = $2",
        )
        .bind(tenant.0)
        .bind(month)
        .bind(to_i64(amount))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn budget_month(
        &self,
        tenant: TenantId,
        month: Date,
    ) -> Result<BudgetMonth, StoreError> {
        let row = sqlx::query(
            "SELECT committed_micro_usd, spent_micro_usd, soft_alerted FROM budget_months
             WHERE tenant_id = $1 AND month = $2",
        )
        .bind(tenant.0)
        .bind(month)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(BudgetMonth::default()),
            Some(row) => Ok(BudgetMonth {
                committed_micro_usd: row.try_get("committed_micro_usd")?,
                spent_micro_usd: row.try_get("spent_micro_usd")?,
                soft_alerted: row.try_get("soft_alerted")?,
            }),
        }
    }

    /// Marks the month's soft threshold as reported, with its audit row; false when it already was.
    pub async fn mark_soft_alerted(
        &self,
        tenant: TenantId,
        month: Date,
        audit_entry: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE budget_months SET soft_alerted = true
             WHERE tenant_id = $1 AND month = $2 AND NOT soft_alerted",
        )
        .bind(tenant.0)
        .bind(month)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if changed {
            audit::insert(&mut tx, audit_entry).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Usage totals from the daily rollups, `from..=to` (UTC days), optionally for one tenant.
    pub async fn usage_report(
        &self,
        tenant: Option<TenantId>,
        from: Date,
        to: Date,
        grouping: UsageGrouping,
    ) -> Result<Vec<UsageTotals>, StoreError> {
        let key = match grouping {
            UsageGrouping::Day => "day::text AS day, NULL::text AS provider, NULL::text AS model",
            UsageGrouping::Model => "NULL::text AS day, provider, model",
            UsageGrouping::Provider => "NULL::text AS day, provider, NULL::text AS model",
            UsageGrouping::DayModel => "day::text AS day, provider, model",
        };
        let group = match grouping {
            UsageGrouping::Day => "tenant_id, day",
            UsageGrouping::Model => "tenant_id, provider, model",
            UsageGrouping::Provider => "tenant_id, provider",
            UsageGrouping::DayModel => "tenant_id, day, provider, model",
        };
        let rows = sqlx::query(&format!(
            "SELECT tenant_id, {key}, sum(requests)::bigint AS requests, sum(errors)::bigint AS errors,
                    sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
                    sum(cost_micro_usd)::bigint AS cost_micro_usd
             FROM usage_daily
             WHERE day BETWEEN $1 AND $2 AND ($3::uuid IS NULL OR tenant_id = $3)
             GROUP BY {group}
             ORDER BY {group}"
        ))
        .bind(from)
        .bind(to)
        .bind(tenant.map(|t| t.0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageTotals {
                    tenant_id: TenantId(row.try_get("tenant_id")?),
                    day: row.try_get("day")?,
                    provider: row.try_get("provider")?,
                    model: row.try_get("model")?,
                    requests: row.try_get("requests")?,
                    errors: row.try_get("errors")?,
                    input_tokens: row.try_get("input_tokens")?,
                    output_tokens: row.try_get("output_tokens")?,
                    cost_micro_usd: row.try_get("cost_micro_usd")?,
                })
            })
            .collect()
    }
}
