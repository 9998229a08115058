//! The chain itself: cutting a block, verifying the chain, the block explorer, transaction
//! status, metrics and the validators' status.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger::Queries;
use serde_json::{Value, json};

use super::extract::{Authed, Doctor};
use super::openapi::{ErrorBody, answers};
use super::{ApiError, ApiResult, AppState, node_error};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/validate", post(validate))
        .route("/api/validate_chain", get(validate_chain))
        .route("/api/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/status/series", get(series))
        .route("/metrics", get(prometheus))
        .route("/api/blocks", get(blocks))
        .route("/api/tx/{id}", get(tx_status))
}

/// The seed's `/api/validate`: propose a block now and wait for its commit.
#[utoipa::path(
    post, path = "/api/validate", tag = "chain",
    responses(
        (status = 200, description = "The block committed", body = answers::Validated),
        (status = 400, description = "`No pending records to validate`", body = ErrorBody),
        (status = 403, description = "Not a doctor", body = ErrorBody),
        (status = 503, description = "The validators did not commit in time, or the validator \
            is busy or stopped; retry", body = ErrorBody),
    )
)]
async fn validate(
    State(state): State<AppState>,
    Doctor(_doctor): Doctor,
) -> ApiResult<Json<Value>> {
    // The seed sent no body; anything sent is ignored.
    let outcome = state
        .chain
        .local
        .cut()
        .await
        .map_err(|e| node_error("cut", e))?;
    state.flows.clear_pending();
    let hash = hex::encode(outcome.hash);
    Ok(Json(json!({
        "success": true,
        "message": format!(
            "Block {} committed | {}/{} validators approved | {} transactions",
            &hash[..8],
            outcome.votes,
            outcome.validators,
            outcome.tx_count
        ),
        "height": outcome.height,
        "hash": hash,
        "votes": outcome.votes,
        "validators": outcome.validators,
        "tx_count": outcome.tx_count,
    })))
}

/// The seed's `/api/validate_chain`: the ledger's full verification of the local chain.
#[utoipa::path(
    get, path = "/api/validate_chain", tag = "chain",
    responses(
        (status = 200, description = "The verdict (an invalid chain is a 200 with `valid: false`)",
            body = answers::ChainVerdict),
        (status = 503, description = "The validator is busy or stopped", body = ErrorBody),
    )
)]
async fn validate_chain(State(state): State<AppState>, _auth: Authed) -> ApiResult<Json<Value>> {
    let genesis = state.chain.local.genesis().clone();
    // A connection of its own: the run is long, the pooled ones are for short reads.
    let node = state.chain.local.clone();
    let result = tokio::task::spawn_blocking(move || {
        node.read_apart(move |r| Ok(r.verify(&genesis, &mut |_| {})))
    })
    .await?
    .map_err(|e| super::node_error("read", e))?;
    Ok(Json(match result {
        Ok(summary) => json!({
            "success": true,
            "valid": true,
            "message": format!(
                "Chain valid: {} blocks, {} transactions, head {}",
                summary.blocks,
                summary.transactions,
                &hex::encode(summary.head_hash)[..8]
            ),
            "block_count": summary.blocks,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "chain verification failed");
            let block_count = state
                .read_chain(|r| r.head())
                .await
                .map(|(h, _)| h + 1)
                .unwrap_or(0);
            json!({
                "success": true,
                "valid": false,
                "message": format!("Chain invalid: {e}"),
                "block_count": block_count,
            })
        }
    }))
}

/// The key service's state and counters, for this hospital's own staff: on `/api/metrics`
/// only, never on `/api/status`, which any session reads (a spike of keys pulled shows a
/// history moving after a grant: docs/SECURITY.md §16.14).
fn key_metrics(status: &node::KeyStatus) -> Value {
    let c = &status.counters;
    json!({
        "processed_height": status.processed_height,
        "waiting": status.waiting,
        "held": status.held,
        "received": c.keys_received,
        "served": c.keys_served,
        "refused_wrong": c.keys_refused_wrong,
        "refused_reused": c.keys_refused_reused,
        "refused_unentitled": c.keys_refused_unentitled,
        "requests_dropped": c.keys_requests_dropped,
        "requests_busy": c.keys_requests_busy,
        "requests_busy_behind": c.keys_requests_busy_behind,
        "requests_not_entitled": c.keys_requests_not_entitled,
        "requests_not_held": c.keys_requests_not_held,
        "requests_fetching": c.keys_requests_fetching,
        "requests_checked": c.keys_requests_checked,
        "answers_dropped": c.keys_answers_dropped,
        "answers_late": c.keys_answers_late,
        "rows_refused": c.keys_rows_refused,
        "rows_checked": c.keys_rows_checked,
    })
}

/// The seed's `/api/metrics`: the last 100 committed blocks' measurements, and, to a doctor of
/// this hospital, the key service's state and counters (`keys`).
#[utoipa::path(
    get, path = "/api/metrics", tag = "chain",
    responses(
        (status = 200, description = "The last 100 blocks' measurements", body = answers::Metrics),
    )
)]
async fn metrics(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<Value>> {
    let blocks = state.chain.local.shared().block_metrics();
    let account = auth.account();
    let staff =
        account.role == crate::app::Role::Doctor && account.home == Some(state.flows.here().index);
    let keys = if staff {
        key_metrics(&state.chain.local.key_status())
    } else {
        Value::Null
    };
    if blocks.is_empty() {
        return Ok(Json(json!({
            "success": true,
            "metrics": [],
            "count": 0,
            "message": "No metrics collected yet",
            "keys": keys,
        })));
    }
    let entries: Vec<Value> = blocks
        .iter()
        .map(|m| {
            let rate = if m.attempted_blocks == 0 {
                100.0
            } else {
                100.0 * m.success_blocks as f64 / m.attempted_blocks as f64
            };
            json!({
                "timestamp": m.timestamp_ms as f64 / 1000.0,
                "height": m.height,
                "latency": m.latency.as_secs_f64(),
                "tps": m.tps,
                "energy": m.energy_joules,
                "success_rate": rate,
                "attempted_blocks": m.attempted_blocks,
                "success_blocks": m.success_blocks,
                "tx_count": m.tx_count,
                "consensus": {
                    "votes": m.votes,
                    "required_votes": m.required_votes,
                    "validator_count": m.validators,
                },
            })
        })
        .collect();
    let latest = entries.last().cloned();
    Ok(Json(json!({
        "success": true,
        "count": entries.len(),
        "latest": latest,
        "metrics": entries,
        "keys": keys,
    })))
}

/// Validators' state, the primary, throughput, latency, and the countdown to the next block.
#[utoipa::path(
    get, path = "/api/status", tag = "chain",
    responses(
        (status = 200, description = "The validators and the chain", body = answers::Status),
        (status = 503, description = "The validator is busy or stopped", body = ErrorBody),
    )
)]
async fn status(State(state): State<AppState>, _auth: Authed) -> ApiResult<Json<Value>> {
    let local = state.chain.local.status();
    let genesis = state.chain.local.genesis();
    let names: Vec<String> = genesis
        .validators()
        .iter()
        .map(|v| v.name.clone())
        .collect();
    let contact = state.chain.local.shared().peer_last_contact();
    let statuses: HashMap<u32, node::NodeStatus> = state
        .chain
        .validators
        .iter()
        .map(|h| (h.id(), h.status()))
        .collect();
    let primary = local.primary;
    let validators: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let id = i as u32;
            let heard = contact.get(i).copied().flatten();
            let last_contact_ms = heard.map(|d| d.as_millis() as u64);
            match statuses.get(&id) {
                Some(s) => json!({
                    "id": id,
                    "name": name,
                    "state": if s.failed.is_some() { "failed" }
                             else if s.recovering { "recovering" }
                             else if s.view_changing { "view-change" }
                             else { "up" },
                    "recovering": s.recovering,
                    "alarms": s.alarms,
                    "height": s.height,
                    "view": s.view,
                    "primary": id == primary,
                    "pending": s.pending,
                    "last_contact_ms": last_contact_ms,
                }),
                None => {
                    // Not in this process: judge by when we last heard from it, and show what
                    // it last claimed (its status frame's head, its messages' view).
                    let up = id == local.id
                        || heard.is_some_and(|d| d < std::time::Duration::from_secs(5));
                    let claim = local.peers.get(i).copied().unwrap_or_default();
                    json!({
                        "id": id,
                        "name": name,
                        "state": if up { "up" } else { "down" },
                        "height": claim.height,
                        "view": claim.view,
                        "primary": id == primary,
                        "last_contact_ms": last_contact_ms,
                    })
                }
            }
        })
        .collect();
    let shared = state.chain.local.shared();
    let blocks = shared.block_metrics();
    let latencies = shared.latencies();
    let median_latency_ms = median_ms(&latencies);
    let last = blocks.last();
    let tps = last.map(|m| m.tps).unwrap_or(0.0);
    let success_rate = last.map(|m| {
        if m.attempted_blocks == 0 {
            100.0
        } else {
            100.0 * m.success_blocks as f64 / m.attempted_blocks as f64
        }
    });
    let tx_count = state.read_chain(|r| r.transaction_count()).await?;
    let window_ms = state.chain.batch_window.as_millis() as u64;
    let next_cut_in_ms = if local.pending > 0 {
        let since = state
            .flows
            .pending_since()
            .unwrap_or_else(crate::app::now_ms);
        Some(window_ms.saturating_sub(crate::app::now_ms().saturating_sub(since)))
    } else {
        state.flows.clear_pending();
        None
    };
    Ok(Json(json!({
        "success": true,
        "chain_id": genesis.chain_id(),
        "node": local.name,
        "height": local.height,
        "head_hash": hex::encode(local.head_hash),
        "view": local.view,
        "primary": names.get(primary as usize),
        "pending": local.pending,
        // Lost its durable state: it sends no vote until it cannot contradict an earlier one.
        "recovering": local.recovering,
        "batch_window_ms": window_ms,
        "next_cut_in_ms": next_cut_in_ms,
        "validators": validators,
        "metrics": {
            "tps": tps,
            "latency_ms": median_latency_ms,
            "success_rate": success_rate,
            "tx_count": tx_count,
            "committed_since_start": shared.committed_transactions(),
            // Consensus alarms since start: the fault model exceeded or a damaged store.
            "alarms": local.alarms,
        },
    })))
}

/// The local validator's last minutes, one sample a second, oldest first: committed
/// transactions per second, proposal-to-commit latency, height and view (the dashboard's
/// charts).
#[utoipa::path(
    get, path = "/api/status/series", tag = "chain",
    responses(
        (status = 200, description = "Per-second samples, at most ten minutes",
            body = answers::Series),
    )
)]
async fn series(State(state): State<AppState>, _auth: Authed) -> Json<Value> {
    let samples = state.chain.local.shared().telemetry().samples();
    Json(json!({
        "success": true,
        "interval_ms": 1000,
        "samples": samples,
    }))
}

/// Prometheus' scrape: the local validator's counters (counts only, docs/SECURITY.md
/// "Metrics"), in the OpenMetrics text format.
#[utoipa::path(
    get, path = "/metrics", tag = "service",
    security(()),
    responses(
        (status = 200, description = "The counters, OpenMetrics text", body = String,
            content_type = "application/openmetrics-text"),
    )
)]
async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.chain.local.shared().telemetry().encode(),
    )
}

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn median_ms(latencies: &[std::time::Duration]) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Parses `before` and `limit` of `/api/blocks`.
fn page_params(query: Option<String>) -> ApiResult<(Option<u64>, usize)> {
    let mut before = None;
    let mut limit = 20usize;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "before" => {
                before =
                    Some(v.parse::<u64>().map_err(|_| {
                        ApiError::validation("before", "before must be a block height")
                    })?)
            }
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=100).contains(l))
                    .ok_or_else(|| {
                        ApiError::validation("limit", "limit must be between 1 and 100")
                    })?
            }
            _ => {}
        }
    }
    Ok((before, limit))
}

/// The block explorer: newest first, `limit` per page, below `before`.
#[utoipa::path(
    get, path = "/api/blocks", tag = "chain",
    params(
        ("before" = Option<u64>, Query, description = "Only blocks below this height"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100,
            description = "Blocks per page (default 20)"),
    ),
    responses(
        (status = 200, description = "One page of blocks, newest first", body = answers::Blocks),
        (status = 400, description = "`before` is not a height, or `limit` not 1 to 100",
            body = ErrorBody),
        (status = 503, description = "The validator is busy or stopped", body = ErrorBody),
    )
)]
async fn blocks(
    State(state): State<AppState>,
    _auth: Authed,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let (before, limit) = page_params(query)?;
    let names: Vec<String> = state
        .chain
        .local
        .genesis()
        .validators()
        .iter()
        .map(|v| v.name.clone())
        .collect();
    let page = state
        .read_chain(move |r| {
            let page = r.blocks_page(before, limit)?;
            let mut out = Vec::with_capacity(page.len());
            for b in page {
                let signers: Vec<u32> = r
                    .block(b.height)?
                    .map(|full| {
                        full.certificate
                            .signatures
                            .iter()
                            .map(|(v, _)| *v)
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((b, signers));
            }
            Ok(out)
        })
        .await?;
    let name = |i: u32| {
        names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    };
    let next_before = page
        .last()
        .map(|(b, _)| b.height)
        .filter(|h| *h > 0 && page.len() == limit);
    let blocks: Vec<Value> = page
        .iter()
        .map(|(b, signers)| {
            json!({
                "height": b.height,
                "hash": hex::encode(b.hash),
                "timestamp_ms": b.timestamp_ms,
                "proposer": if b.height == 0 { "genesis".to_string() } else { name(b.proposer) },
                "view": b.view,
                "tx_count": b.tx_count,
                "signers": signers.iter().map(|s| name(*s)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "success": true,
        "blocks": blocks,
        "next_before": next_before,
    })))
}

/// Where a transaction stands: pending at this validator, committed at a height, or unknown.
#[utoipa::path(
    get, path = "/api/tx/{id}", tag = "chain",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{64}$",
        description = "The transaction's id (64 hex digits)")),
    responses(
        (status = 200, description = "Its status", body = answers::TxStatus),
        (status = 400, description = "`id` is not 64 hex digits", body = ErrorBody),
        (status = 503, description = "The validator is busy or stopped", body = ErrorBody),
    )
)]
async fn tx_status(
    State(state): State<AppState>,
    _auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let bytes = hex::decode(&id)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ApiError::validation("id", "id must be 64 hex characters"))?;
    let on_chain = state.read_chain(move |r| r.tx_status(&bytes)).await?;
    let body = match on_chain {
        ledger::TxStatus::Committed {
            height,
            index,
            rejected,
        } => json!({
            "success": true,
            "id": id,
            "status": if rejected.is_some() { "rejected" } else { "committed" },
            "height": height,
            "index": index,
            "reason": rejected,
        }),
        ledger::TxStatus::Unknown => {
            let pending = state.chain.local.shared().is_pending(&bytes);
            json!({
                "success": true,
                "id": id,
                "status": if pending { "pending" } else { "unknown" },
            })
        }
    };
    Ok(Json(body))
}
