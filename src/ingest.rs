//! The ingest API: `POST /emoji` and `POST /emoji/batch`.
//!
//! Validation is the dataflow crate's ([`dataflows::parse_reaction`]), so the API and the
//! dataflow agree on what a reaction is. A batch is validated whole before anything is queued.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dataflows::reaction::{parse_reaction, parse_reaction_of, MissingTimestamp, ReactionRef};
use dataflows::{wall_clock_ms, Reaction};
use serde_json::value::RawValue;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::auth::{presented, Auth, Identity, Presented, Reason};
use crate::http_error::{media_type, ApiError};
use crate::kafka::producer::{ProduceError, ReactionProducer};
use crate::rate_limit::{KeyedRateLimit, Limited};
use crate::stats::{RejectReason, Stats};

/// Largest body of `POST /emoji`.
pub const MAX_SINGLE_BYTES: u64 = 16 * 1024;
/// Largest body of `POST /emoji/batch`.
pub const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Most reactions in one batch.
pub const MAX_BATCH_REACTIONS: usize = 10_000;

/// What the ingest routes share.
#[derive(Clone)]
pub struct Ingest {
    /// Where reactions go.
    pub producer: ReactionProducer,
    /// Per-user limit, if configured.
    pub rate_limit: Option<Arc<KeyedRateLimit>>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// How long a request's body may take to arrive whole (the header timeout).
    pub body_timeout: Duration,
    /// Token checks, when tokens are on.
    pub auth: Option<Arc<Auth>>,
}

/// The request body, read whole within `limit` and at most `max` bytes long: a body that
/// stalls is a 408, one cut short (the client closed before `Content-Length` bytes) a 400, one
/// longer than `max` a 413 (an HTTP/2 body needs no `Content-Length` to be checked first).
pub(crate) fn body_within(
    limit: Duration,
    max: u64,
) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::stream().and_then(move |body| async move {
        let mut whole = std::pin::pin!(collect(body, max));
        // Most bodies came with their head: no timer for those.
        let read = match futures_util::FutureExt::now_or_never(&mut whole) {
            Some(read) => Ok(read),
            None => tokio::time::timeout(limit, whole).await,
        };
        match read {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(BodyError::Cut(e))) => Err(warp::reject::custom(ApiError::new(
                StatusCode::BAD_REQUEST,
                "incomplete_body",
                format!("the body ended before its Content-Length: {e}"),
            ))),
            Ok(Err(BodyError::TooLarge)) => Err(warp::reject::custom(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over {max} bytes"),
            ))),
            Err(_) => Err(warp::reject::custom(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} ms", limit.as_millis()),
            ))),
        }
    })
}

enum BodyError {
    Cut(warp::Error),
    TooLarge,
}

async fn collect(
    body: impl futures_util::Stream<Item = Result<impl bytes::Buf, warp::Error>>,
    max: u64,
) -> Result<Bytes, BodyError> {
    use futures_util::StreamExt;
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let mut body = std::pin::pin!(body);
    let Some(first) = body.next().await else {
        return Ok(Bytes::new());
    };
    let mut first = first.map_err(BodyError::Cut)?;
    if first.remaining() > max {
        return Err(BodyError::TooLarge);
    }
    let first = first.copy_to_bytes(first.remaining());
    let Some(second) = body.next().await else {
        // One chunk, the usual case: no copy.
        return Ok(first);
    };
    let mut all = bytes::BytesMut::from(&first[..]);
    let mut next = Some(second);
    while let Some(chunk) = next {
        let mut chunk = chunk.map_err(BodyError::Cut)?;
        if all.len().saturating_add(chunk.remaining()) > max {
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            all.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
        next = body.next().await;
    }
    Ok(all.freeze())
}

/// `POST /emoji` and `POST /emoji/batch`.
pub fn routes(
    ingest: Ingest,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let single = {
        let ingest = ingest.clone();
        warp::path!("emoji")
            .and(warp::post())
            .and(warp::body::content_length_limit(MAX_SINGLE_BYTES))
            .and(warp::header::optional::<String>("content-type"))
            .and(presented())
            .and(body_within(ingest.body_timeout, MAX_SINGLE_BYTES))
            .and_then(
                move |content_type: Option<String>, presented: Presented, body: Bytes| {
                    let ingest = ingest.clone();
                    async move {
                        ingest
                            .single(content_type, presented, body)
                            .await
                            .map_err(warp::reject::custom)
                    }
                },
            )
    };
    let batch = warp::path!("emoji" / "batch")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_BATCH_BYTES))
        .and(warp::header::optional::<String>("content-type"))
        .and(presented())
        .and(body_within(ingest.body_timeout, MAX_BATCH_BYTES))
        .and_then(
            move |content_type: Option<String>, presented: Presented, body: Bytes| {
                let ingest = ingest.clone();
                async move {
                    ingest
                        .batch(content_type, presented, body)
                        .await
                        .map_err(warp::reject::custom)
                }
            },
        );
    single.or(batch).unify()
}

#[derive(PartialEq)]
enum Format {
    Json,
    Ndjson,
}

/// The body's format, from its `Content-Type`, which is required: without it a web page of any
/// origin could post reactions with no CORS preflight.
fn format_of(content_type: Option<&str>, ndjson_allowed: bool) -> Result<Format, ApiError> {
    let Some(content_type) = content_type else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if ndjson_allowed {
                "send Content-Type: application/json (an array) or application/x-ndjson"
            } else {
                "send Content-Type: application/json"
            },
        ));
    };
    match media_type(content_type).as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson" | "application/ndjson" if ndjson_allowed => Ok(Format::Ndjson),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if ndjson_allowed {
                format!("Content-Type {other} is not accepted; send application/json (an array) or application/x-ndjson")
            } else {
                format!("Content-Type {other} is not accepted; send application/json")
            },
        )),
    }
}

/// `refused` is the number of reactions the request carried: a batch is refused whole.
/// The reactions of an NDJSON batch: its lines that are not blank.
fn lines(body: &[u8]) -> usize {
    body.split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .count()
}

fn invalid(stats: &Stats, where_: &str, e: dataflows::InvalidReaction, refused: usize) -> ApiError {
    stats.reject(e.field, refused as u64);
    ApiError::new(
        StatusCode::BAD_REQUEST,
        e.field.error_code(),
        format!("{where_}{e}"),
    )
}

/// Parses one reaction, as `identity`'s when there is one.
fn parse<'a>(
    json: &'a [u8],
    identity: Option<&Identity>,
    now: i64,
    missing: MissingTimestamp,
) -> Result<ReactionRef<'a>, dataflows::InvalidReaction> {
    match identity {
        Some(identity) => parse_reaction_of(json, &identity.user, now, missing),
        None => parse_reaction(json, now, missing),
    }
}

impl Ingest {
    /// The token's identity when tokens are on; checked before the body is parsed, so a
    /// caller without a token learns nothing about its reactions.
    fn identify(&self, presented: &Presented) -> Result<Option<Arc<Identity>>, ApiError> {
        match &self.auth {
            None => Ok(None),
            Some(auth) => auth.identify(presented).map(Some),
        }
    }

    /// Every reaction must be the token's user's, on a stream it may publish to.
    fn authorize(
        &self,
        identity: Option<&Identity>,
        reactions: &[Reaction],
    ) -> Result<(), ApiError> {
        let (Some(auth), Some(identity)) = (&self.auth, identity) else {
            return Ok(());
        };
        let refused = |auth: &Auth, reason: Reason, message: String| {
            self.stats
                .reject(RejectReason::Token, reactions.len() as u64);
            auth.forbidden(reason, message)
        };
        for (i, r) in reactions.iter().enumerate() {
            let at = if reactions.len() > 1 {
                format!("reaction {i}: ")
            } else {
                String::new()
            };
            if r.user_id != identity.user {
                return Err(refused(
                    auth,
                    Reason::UserMismatch,
                    format!(
                        "{at}user_id {:?} is not the token's user {:?}; leave user_id out or send the token's",
                        r.user_id, identity.user
                    ),
                ));
            }
            if !identity.may_publish(r.stream_id.as_str()) {
                return Err(refused(
                    auth,
                    Reason::StreamForbidden,
                    format!(
                        "{at}the token of {:?} does not let it react on stream {:?} (emostream.publish)",
                        identity.user,
                        r.stream_id.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn single(
        &self,
        content_type: Option<String>,
        presented: Presented,
        body: Bytes,
    ) -> Result<warp::reply::Response, ApiError> {
        let identity = self.identify(&presented).inspect_err(|_| {
            self.stats.reject(RejectReason::Token, 1);
        })?;
        format_of(content_type.as_deref(), false)?;
        let now = wall_clock_ms();
        let reaction = parse(&body, identity.as_deref(), now, MissingTimestamp::Use(now))
            .map_err(|e| invalid(&self.stats, "", e, 1))?
            .into_owned();
        self.authorize(identity.as_deref(), std::slice::from_ref(&reaction))?;
        self.admit(std::slice::from_ref(&reaction)).await?;
        Ok(accepted(1))
    }

    async fn batch(
        &self,
        content_type: Option<String>,
        presented: Presented,
        body: Bytes,
    ) -> Result<warp::reply::Response, ApiError> {
        let identity = self.identify(&presented).inspect_err(|_| {
            self.stats.reject(RejectReason::Token, 1);
        })?;
        let identity = identity.as_deref();
        let format = format_of(content_type.as_deref(), true)?;
        let now = wall_clock_ms();
        let missing = MissingTimestamp::Use(now);
        let mut reactions = Vec::new();
        match format {
            Format::Json => {
                let items: Vec<&RawValue> = serde_json::from_slice(&body).map_err(|e| {
                    self.stats.reject(dataflows::Field::Body, 1);
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_json",
                        format!("body: expected a JSON array of reactions: {e}"),
                    )
                })?;
                check_batch_size(items.len())?;
                for (i, item) in items.iter().enumerate() {
                    let reaction =
                        parse(item.get().as_bytes(), identity, now, missing).map_err(|e| {
                            invalid(&self.stats, &format!("reactions[{i}].",), e, items.len())
                        })?;
                    reactions.push(reaction.into_owned());
                }
            }
            Format::Ndjson => {
                for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    check_batch_size(reactions.len() + 1)?;
                    let reaction = parse(line, identity, now, missing).map_err(|e| {
                        invalid(&self.stats, &format!("line {}: ", i + 1), e, lines(&body))
                    })?;
                    reactions.push(reaction.into_owned());
                }
            }
        }
        if reactions.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "empty_batch",
                "the batch holds no reactions",
            ));
        }
        self.authorize(identity, &reactions)?;
        self.admit(&reactions).await?;
        Ok(accepted(reactions.len()))
    }

    /// Rate limit, capacity, then the producer.
    async fn admit(&self, reactions: &[Reaction]) -> Result<(), ApiError> {
        if let Some(limit) = &self.rate_limit {
            let mut per_user: std::collections::HashMap<&str, u32> =
                std::collections::HashMap::new();
            for r in reactions {
                *per_user.entry(&r.user_id).or_default() += 1;
            }
            for (user, n) in per_user {
                let Err(limited) = limit.check(user, n) else {
                    continue;
                };
                self.stats
                    .reject(RejectReason::RateLimited, reactions.len() as u64);
                return Err(match limited {
                    Limited::Wait(wait) => ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!("user {user:?} is sending reactions too fast; slow down"),
                    )
                    .retry_after(crate::rate_limit::retry_after_secs(wait)),
                    Limited::Full => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "rate_limiter_full",
                        "the rate limiter holds as many users as it may (a flood of new user ids); retry",
                    )
                    .retry_after(crate::rate_limit::FORGET_EVERY.as_secs().max(1)),
                    // Waiting would not help: say so instead of asking for a retry.
                    Limited::TooMany { burst } => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_many_for_rate_limit",
                        format!(
                            "the batch holds {n} reactions of user {user:?}; the rate limit lets at most {burst} through at once: split it"
                        ),
                    ),
                });
            }
        }
        let Some(_room) = self.producer.reserve(reactions.len()) else {
            self.stats.rejected_queue_full.inc();
            self.stats
                .reject(RejectReason::QueueFull, reactions.len() as u64);
            return Err(queue_full(0));
        };
        match self.producer.send(reactions).await {
            Ok(()) => {
                self.stats.accepted.add(reactions.len() as u64);
                Ok(())
            }
            Err((sent, error)) => {
                self.stats.accepted.add(sent as u64);
                let unsent = (reactions.len() - sent) as u64;
                let mut answer = match error {
                    ProduceError::QueueFull => {
                        self.stats.rejected_queue_full.inc();
                        self.stats.reject(RejectReason::QueueFull, unsent);
                        queue_full(sent)
                    }
                    ProduceError::Failed(e) => {
                        self.stats.reject(RejectReason::BrokerUnavailable, unsent);
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "broker_unavailable",
                            format!("the reactions could not be written to Kafka: {e}"),
                        )
                        .retry_after(1)
                    }
                    // The broker may have them: counted neither as accepted nor as refused.
                    e @ ProduceError::Unconfirmed(_) => {
                        self.stats.unconfirmed.add(unsent);
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "broker_unavailable",
                            format!("{e}: the Kafka broker is slow or away; resending may count them twice"),
                        )
                        .retry_after(2)
                    }
                    e @ ProduceError::Stalled(_) => {
                        self.stats.reject(RejectReason::BrokerUnavailable, unsent);
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "broker_unavailable",
                            format!(
                                "{e}: the Kafka broker is slow or away; retry after Retry-After"
                            ),
                        )
                        .retry_after(2)
                    }
                };
                answer.accepted = Some(sent);
                Err(answer)
            }
        }
    }
}

fn check_batch_size(n: usize) -> Result<(), ApiError> {
    if n > MAX_BATCH_REACTIONS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_reactions",
            format!("a batch holds at most {MAX_BATCH_REACTIONS} reactions; split it"),
        ));
    }
    Ok(())
}

fn queue_full(accepted: usize) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_full",
        "the Kafka producer queue is full; retry after the Retry-After delay",
    )
    .retry_after(1);
    e.accepted = Some(accepted);
    e
}

fn accepted(n: usize) -> warp::reply::Response {
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "accepted": n })),
        StatusCode::ACCEPTED,
    )
    .into_response()
}
