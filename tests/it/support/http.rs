//! The one HTTP answer type of the tests: a response read whole (status, headers, body
//! bytes), with the checks every module makes on answers, and the typed requests of
//! [`TestApp`].

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use super::TestApp;

/// An answer, read whole. `what` names the request in failure messages.
pub struct Answer {
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// Reads `res` whole.
    pub async fn read(what: String, res: reqwest::Response) -> Answer {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: body: {e}"));
        Answer {
            what,
            status,
            headers,
            body,
        }
    }

    /// Sends `req` and reads the answer whole; `what` is the method and the path.
    pub async fn send(req: RequestBuilder) -> Answer {
        let (client, request) = req.build_split();
        let request = request.unwrap_or_else(|e| panic!("request: {e}"));
        let url = request.url();
        let what = match url.query() {
            Some(q) => format!("{} {}?{q}", request.method(), url.path()),
            None => format!("{} {}", request.method(), url.path()),
        };
        let res = client
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Answer::read(what, res).await
    }

    /// The answer as given, for checks that do not need a request.
    pub fn made(status: u16, headers: HeaderMap, body: impl Into<Bytes>) -> Answer {
        Answer {
            what: format!("a made-up {status} answer"),
            status,
            headers,
            body: body.into(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.what, self.text()))
    }

    /// The phase names of `Server-Timing`.
    pub fn phases(&self) -> Vec<String> {
        self.headers
            .get_all("server-timing")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or_default().split(','))
            .map(|p| p.split(';').next().unwrap_or_default().trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Every answer of the API carries `Server-Timing` with a `total` phase.
    pub fn assert_timed(self) -> Answer {
        assert!(
            self.phases().iter().any(|p| p == "total"),
            "{}: no Server-Timing total (status {}, headers {:?})",
            self.what,
            self.status,
            self.headers
        );
        self
    }

    pub fn assert_phases(&self, names: &[&str]) {
        let phases = self.phases();
        for n in names {
            assert!(
                phases.iter().any(|p| p == n),
                "{}: Server-Timing without {n}: {:?}",
                self.what,
                self.header("server-timing")
            );
        }
    }

    pub fn assert_json_type(&self) {
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "{}: content-type {ct:?}: {}",
            self.what,
            self.text()
        );
    }

    /// The JSON body of a 200 answer.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}: {}", self.what, self.text());
        self.assert_json_type();
        self.json()
    }

    /// A 201 from POST /waybills: the waybill, with `Location`, `ETag: "1"` and the
    /// `validate`, `db` and `total` phases.
    pub fn created(&self) -> Value {
        assert_eq!(self.status, 201, "{}: {}", self.what, self.text());
        self.assert_json_type();
        let w = self.json();
        let id = w["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no id: {w}", self.what));
        assert_eq!(
            self.header("location"),
            Some(format!("/waybills/{id}").as_str()),
            "{}: Location",
            self.what
        );
        assert_eq!(self.header("etag"), Some("\"1\""), "{}: ETag", self.what);
        self.assert_phases(&["validate", "db", "total"]);
        w
    }

    /// An RFC 9457 problem with one of `statuses`: its body.
    pub fn problem(&self, statuses: &[u16]) -> Value {
        self.check_problem(statuses)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Answer::problem`], reporting instead of panicking.
    pub fn check_problem(&self, statuses: &[u16]) -> Result<Value, String> {
        let fail = |why: String| Err(format!("{}: {why}: {}", self.what, self.text()));
        if !statuses.contains(&self.status) {
            return fail(format!(
                "status {} (expected one of {statuses:?})",
                self.status
            ));
        }
        let ct = self.header("content-type").unwrap_or_default();
        if !ct.starts_with("application/problem+json") {
            return fail(format!("content-type {ct:?}"));
        }
        let Ok(body) = serde_json::from_slice::<Value>(&self.body) else {
            return fail("not JSON".into());
        };
        if body["status"] != self.status {
            return fail("problem status differs from the HTTP status".into());
        }
        for key in ["title", "detail"] {
            if body[key].as_str().is_none_or(|s| s.is_empty()) {
                return fail(format!("problem without {key}"));
            }
        }
        Ok(body)
    }

    /// A problem whose `detail` names `culprit`.
    pub fn problem_naming(&self, status: u16, culprit: &str) -> Value {
        let body = self.problem(&[status]);
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(culprit),
            "{}: detail should name {culprit:?}: {detail:?}",
            self.what
        );
        body
    }

    /// A 503 problem with `Retry-After`.
    pub fn unavailable(&self) {
        self.problem(&[503]);
        let ra = self.header("retry-after").unwrap_or_else(|| {
            panic!("{}: 503 without Retry-After: {:?}", self.what, self.headers)
        });
        assert!(!ra.trim().is_empty(), "{}: empty Retry-After", self.what);
    }
}

/// `path?k=v&...`, form-encoded (so `+`, `/`, `=` and accents survive).
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return path.to_owned();
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{path}?{query}")
}

/// A path segment, percent-encoded.
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn routes_path(feed: &str) -> String {
    format!("/feeds/{}/routes", seg(feed))
}

pub fn route_path(feed: &str, route: &str) -> String {
    format!("/feeds/{}/routes/{}", seg(feed), seg(route))
}

pub fn trips_path(feed: &str, route: &str, date: &str) -> String {
    with_query(
        &format!("{}/trips", route_path(feed, route)),
        &[("date", date)],
    )
}

/// Sends every request at the same moment (one task each, released together): the
/// status and JSON body of each answer, in order. Every answer but a 201 must be
/// problem+json.
pub async fn all_at_once(requests: Vec<RequestBuilder>) -> Vec<(u16, Value)> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|req| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let res = req.send().await.expect("a request sent at once");
                let status = res.status().as_u16();
                let ct = res
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let text = res.text().await.unwrap();
                if status != 201 {
                    assert!(
                        ct.starts_with("application/problem+json"),
                        "{status} as {ct}: {text}"
                    );
                }
                let body = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
                (status, body)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

impl TestApp {
    /// `POST /waybills` with `body` as JSON, an `Idempotency-Key` and a bearer token if
    /// given, not sent yet (for [`all_at_once`]).
    pub fn waybill_request(
        &self,
        body: &Value,
        key: Option<&str>,
        token: Option<&str>,
    ) -> RequestBuilder {
        let mut req = self.request(Method::POST, "/waybills").json(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// A request to `path` on the app.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// GET `path` with extra request headers, read whole.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.request(Method::GET, path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Answer::send(req).await
    }

    /// `GET /feeds/{feed}/routes/{route}`, with its `Server-Timing` checked.
    pub async fn get_route(&self, feed: &str, route: &str) -> Answer {
        self.get_with(&route_path(feed, route), &[])
            .await
            .assert_timed()
    }

    /// `POST /waybills` with `body` as JSON, with its `Server-Timing` checked.
    pub async fn post_waybill(&self, body: &Value) -> Answer {
        Answer::send(self.request(Method::POST, "/waybills").json(body))
            .await
            .assert_timed()
    }
}
