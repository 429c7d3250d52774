//! Requests: routing, the faults, and the answer body (chunked past Jersey's buffer).

use super::*;

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// A response before faults are applied.
pub(super) struct Prepared {
    pub(super) status: StatusCode,
    pub(super) content_type: &'static str,
    pub(super) headers: Vec<(HeaderName, String)>,
    pub(super) body: Bytes,
    /// Sent like Jersey does: chunked when larger than its 8 KiB buffer.
    pub(super) jersey: bool,
    /// HEAD: headers only, Content-Length of the body that would have been sent.
    pub(super) head: bool,
    /// `Connection: close`, and the connection closed (OTP 1 after a 500).
    pub(super) close: bool,
}

impl Prepared {
    pub(super) fn new(
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Prepared {
        Prepared {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            jersey: false,
            head: false,
            close: false,
        }
    }

    pub(super) fn text(status: StatusCode, body: impl Into<String>) -> Prepared {
        Prepared::new(status, "text/plain", body.into())
    }

    pub(super) fn json(body: Vec<u8>) -> Prepared {
        let mut p = Prepared::new(StatusCode::OK, "application/json", body);
        p.jersey = true;
        p
    }
}

pub(super) const JERSEY_BUFFER: usize = 8192;

pub(super) async fn handle(
    inner: Arc<Inner>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let guard = ActiveGuard::new(ctl.clone());
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let served = ctl.served.fetch_add(1, Ordering::SeqCst) + 1;
    let path = parts.uri.path().to_owned();
    inner.requests.fetch_add(1, Ordering::SeqCst);
    inner.count(&path);

    let graphql = is_graphql_path(&path) && parts.method == Method::POST;
    let gql = graphql.then(|| GqlRequest::parse(&parts.headers, &body));
    match &gql {
        Some(Ok(g)) => {
            let operation = g.operation_for_count();
            inner.count(&operation);
            inner.record(&operation, &parts.headers);
        }
        _ => inner.record(&path, &parts.headers),
    }

    let settings = inner.settings.borrow().clone();
    // With the same default, OTP 1.4.0's Grizzly (2.3.19) says `Connection: close` one
    // response later than OTP 2's: on the 257th.
    let otp1_rest = path.starts_with("/otp/routers/") && !is_graphql_path(&path);
    let close = settings.max_requests.is_some_and(|n| {
        let late = otp1_rest && n == OTP_MAX_REQUESTS_PER_CONNECTION;
        served >= u64::from(n) + u64::from(late)
    });
    match &settings.fault {
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::CloseWithoutAnswer) => {
            ctl.kill.notify_one();
            std::future::pending::<()>().await
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let prepared = match &settings.fault {
        Some(Fault::Status(code)) => fault_status(*code, None),
        Some(Fault::StatusRetryAfter(code, secs)) => fault_status(*code, Some(*secs)),
        _ => {
            let data = {
                let d = inner.data.read().unwrap();
                d.feeds.clone()
            };
            match gql {
                Some(Ok(g)) => execute_graphql(&data, &g, settings.before_2_6),
                Some(Err(p)) => p,
                None => route_request(&inner, &data, &parts.method, &path, &parts.headers),
            }
        }
    };
    let mut prepared = prepared;
    if is_graphql_path(&path) && settings.fault.is_none() {
        otp2_headers(&mut prepared, &parts.headers);
    } else {
        let now = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&jiff::Timestamp::now())
            .unwrap();
        prepared.headers.push((header::DATE, now));
    }
    let close = close || prepared.close;
    Ok(respond(prepared, settings.fault.as_ref(), close, guard))
}

pub(super) fn fault_status(code: u16, retry_after: Option<u32>) -> Prepared {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut p = Prepared::text(
        status,
        format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    );
    if let Some(secs) = retry_after {
        p.headers.push((header::RETRY_AFTER, secs.to_string()));
    }
    p
}

pub(super) const GARBAGE: &[u8] =
    b"<html><body>Gateway says: this is not JSON {\"data\": [\x00\xff\xfe</body>";

pub(super) fn respond(
    p: Prepared,
    fault: Option<&Fault>,
    close: bool,
    guard: ActiveGuard,
) -> Response<SimBody> {
    let mut builder = Response::builder().status(p.status);
    if !p.content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, p.content_type);
    }
    for (name, value) in &p.headers {
        builder = builder.header(name, value.as_str());
    }
    if close {
        builder = builder.header(header::CONNECTION, "close");
    }
    let no_body = p.head || p.status == StatusCode::NOT_MODIFIED;
    let body = match fault {
        Some(Fault::Garbage) => {
            builder = builder.status(StatusCode::OK);
            SimBody::exact(Bytes::from_static(GARBAGE), guard)
        }
        Some(Fault::Truncated) if !no_body => {
            let (declared, sent) = if p.body.len() >= 2 {
                (p.body.len(), p.body.slice(..p.body.len() / 2))
            } else {
                (64, Bytes::from_static(b"{"))
            };
            builder = builder.header(header::CONTENT_LENGTH, declared);
            SimBody {
                data: sent,
                chunk: usize::MAX,
                every: None,
                sleep: None,
                first: true,
                exact: false,
                _guard: Some(guard),
            }
        }
        Some(Fault::SlowBody { chunk, every }) if !no_body => {
            builder = builder.header(header::CONTENT_LENGTH, p.body.len());
            SimBody {
                data: p.body,
                chunk: (*chunk).max(1),
                every: Some(*every),
                sleep: None,
                first: true,
                exact: true,
                _guard: Some(guard),
            }
        }
        _ if no_body => {
            if p.head {
                builder = builder.header(header::CONTENT_LENGTH, p.body.len());
            }
            SimBody::exact(Bytes::new(), guard)
        }
        _ if p.jersey && p.body.len() > JERSEY_BUFFER => SimBody {
            data: p.body,
            chunk: JERSEY_BUFFER,
            every: None,
            sleep: None,
            first: true,
            exact: false,
            _guard: Some(guard),
        },
        _ => SimBody::exact(p.body, guard),
    };
    builder.body(body).expect("a valid response")
}

/// The response body: whole, or in chunks, or slowly; it marks its request finished when
/// dropped.
pub(super) struct SimBody {
    pub(super) data: Bytes,
    pub(super) chunk: usize,
    pub(super) every: Option<Duration>,
    pub(super) sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) first: bool,
    /// Tells hyper the exact length (else hyper uses a Content-Length header or chunks).
    pub(super) exact: bool,
    pub(super) _guard: Option<ActiveGuard>,
}

impl SimBody {
    pub(super) fn exact(data: Bytes, guard: ActiveGuard) -> SimBody {
        SimBody {
            data,
            chunk: usize::MAX,
            every: None,
            sleep: None,
            first: true,
            exact: true,
            _guard: Some(guard),
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        if let (Some(every), false) = (this.every, this.first) {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        this.first = false;
        let n = this.chunk.min(this.data.len());
        Poll::Ready(Some(Ok(Frame::data(this.data.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.data.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}

pub(super) fn is_graphql_path(path: &str) -> bool {
    if path == "/otp/gtfs/v1" || path == "/otp/gtfs/v1/" {
        return true;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(segs.as_slice(), ["otp", "routers", _, "index", "graphql"])
}

pub(super) fn route_request(
    inner: &Inner,
    feeds: &[Arc<Feed>],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Prepared {
    let head = *method == Method::HEAD;
    let mut p = if is_graphql_path(path) && method == Method::OPTIONS {
        // Jersey answers a preflight itself; OTP's CORS filter adds the rest.
        let mut p = Prepared::new(StatusCode::OK, "", Bytes::new());
        if headers.contains_key(header::ORIGIN) {
            p.headers.push((
                HeaderName::from_static("access-control-allow-method"),
                "GET,POST".into(),
            ));
        }
        p.headers
            .push((header::ACCESS_CONTROL_MAX_AGE, "3600".into()));
        p
    } else if is_graphql_path(path) {
        // GtfsGraphQLAPI has POST only: Jersey's 405, without a Content-Type.
        let mut p = Prepared::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "",
            "HTTP 405 Method Not Allowed",
        );
        p.headers.push((header::ALLOW, "POST,OPTIONS".into()));
        p
    } else if let Some(rest) = path.strip_prefix("/otp/routers/") {
        if *method != Method::GET && !head {
            // Jersey's NotAllowedException through OTPExceptionMapper.
            let mut p = jersey_500("javax.ws.rs.NotAllowedException: HTTP 405 Method Not Allowed");
            otp1_cors(&mut p);
            p
        } else {
            otp1(feeds, rest)
        }
    } else if let Some(name) = path
        .strip_prefix("/gtfs/")
        .and_then(|n| n.strip_suffix(".zip"))
    {
        if *method != Method::GET && !head {
            Prepared::text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        } else {
            serve_zip(inner, &percent_decode(name), headers)
        }
    } else {
        Prepared::text(StatusCode::NOT_FOUND, "HTTP 404 Not Found")
    };
    p.head = head;
    p
}

pub(super) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
