//! What a model server says about itself (LOC-2, LOC-3): whether it is up,
//! still loading or down, which models it lists, whether they are loaded
//! and the context a request really gets. One place knows each server's
//! own API: llama.cpp `/props` and `/v1/models` `meta`, LM Studio
//! `/api/v0/models`, Ollama `/api/tags`, `/api/ps` and `/api/show`, vLLM
//! and SGLang `max_model_len` in `/v1/models`.

use std::time::Duration;

use clawgate_core::Secret;
use serde_json::Value;

use crate::client::Client;
use crate::error::{WireError, WireErrorKind};

/// Largest introspection body read (a model list with metadata).
const MAX_INFO_BODY: usize = 4 * 1024 * 1024;

/// Ollama models asked about one by one (`/api/show`) per introspection.
const OLLAMA_SHOW_MAX: usize = 32;

/// A health probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// A success status.
    Ready,
    /// The server answers but is loading its model (llama.cpp's 503
    /// "Loading model"); the text is the server's.
    Loading(String),
    /// Not reachable, or an error status that is not "loading".
    Down(String),
}

/// Whether an error answer means "the model is loading, ask again".
/// llama.cpp answers 503 `{"error":{"message":"Loading model",
/// "type":"unavailable_error"}}` on every endpoint while it loads; other
/// servers that load on demand say "loading" in a 503 too.
pub fn is_loading(status: u16, message: &str) -> bool {
    status == 503 && message.to_ascii_lowercase().contains("loading")
}

impl WireError {
    /// See [`is_loading`].
    pub fn is_loading(&self) -> bool {
        self.status.is_some_and(|s| is_loading(s, &self.message))
    }
}

/// Which server software answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    LlamaCpp,
    LmStudio,
    Ollama,
    Vllm,
    /// Only the OpenAI model list was understood.
    OpenAi,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::LlamaCpp => "llama.cpp",
            ServerKind::LmStudio => "lmstudio",
            ServerKind::Ollama => "ollama",
            ServerKind::Vllm => "vllm",
            ServerKind::OpenAi => "openai-compatible",
        }
    }
}

/// One model as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServedModel {
    pub id: String,
    /// `None` when the server does not say.
    pub loaded: Option<bool>,
    /// The context one request really gets (llama.cpp's per-slot `n_ctx`,
    /// LM Studio's loaded context, Ollama's `num_ctx`, vLLM's
    /// `max_model_len`), when the server says.
    pub context: Option<u64>,
    /// The most the model could take (trained or maximum), when known.
    pub max_context: Option<u64>,
}

/// What a server said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub kind: ServerKind,
    pub models: Vec<ServedModel>,
    /// llama.cpp's parallel slots (`total_slots`), when known.
    pub slots: Option<u64>,
}

impl ServerInfo {
    /// The model entry for `id` (case-insensitive; Ollama's `:latest`
    /// suffix optional).
    pub fn model(&self, id: &str) -> Option<&ServedModel> {
        let norm = |s: &str| {
            let s = s.to_ascii_lowercase();
            s.strip_suffix(":latest").map(str::to_string).unwrap_or(s)
        };
        let want = norm(id);
        self.models.iter().find(|m| norm(&m.id) == want)
    }
}

/// `scheme://host:port` of a base URL (where the servers' native APIs
/// live: `/props`, `/api/...`).
pub fn origin(base: &str) -> Option<&str> {
    let (_, rest) = base.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&base[..base.len() - rest.len() + end])
}

impl Client {
    /// GET `url` (bearer `key` when given), body bounded; any status.
    pub async fn get_raw(
        &self,
        url: &str,
        key: Option<&Secret>,
        within: Duration,
    ) -> Result<(u16, Vec<u8>), WireError> {
        let (http, url) = self.plain(url).await?;
        self.fetch(http.get(url), key, within).await
    }

    /// POST a JSON body to `url`; any status.
    pub async fn post_raw(
        &self,
        url: &str,
        key: Option<&Secret>,
        body: &Value,
        within: Duration,
    ) -> Result<(u16, Vec<u8>), WireError> {
        let (http, url) = self.plain(url).await?;
        let rb = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        self.fetch(rb, key, within).await
    }

    async fn fetch(
        &self,
        mut rb: reqwest::RequestBuilder,
        key: Option<&Secret>,
        within: Duration,
    ) -> Result<(u16, Vec<u8>), WireError> {
        if let Some(k) = key.filter(|k| !k.is_empty()) {
            rb = rb.bearer_auth(k.expose());
        }
        let work = async {
            let resp = rb
                .send()
                .await
                .map_err(|e| crate::client::transport_error(&e, crate::Phase::Headers))?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            let mut resp = resp;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| crate::client::transport_error(&e, crate::Phase::Body))?
            {
                if body.len() + chunk.len() > MAX_INFO_BODY {
                    return Err(WireError::new(
                        WireErrorKind::Malformed,
                        format!("answer larger than {MAX_INFO_BODY} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        match tokio::time::timeout(within, work).await {
            Ok(r) => r,
            Err(_) => Err(WireError::new(
                WireErrorKind::Timeout(crate::Phase::Headers),
                format!("no answer within {} ms", within.as_millis()),
            )),
        }
    }

    /// How many tokens `text` makes on the model server's own tokenizer,
    /// where it has one — llama.cpp (`POST /tokenize` `{content}` →
    /// `{tokens}`) and vLLM (`POST /tokenize` `{model, prompt}` →
    /// `{count}`) —, through the endpoint's own outbound rules. `None`
    /// when the server has no such endpoint or does not answer within
    /// `within`: the caller keeps its estimate.
    pub async fn tokenize(
        &self,
        ep: &crate::Endpoint,
        model: &str,
        text: &str,
        within: Duration,
    ) -> Option<u64> {
        let url = format!("{}/tokenize", origin(&ep.base_url)?);
        let (http, url, _) = self
            .guarded(url, ep.policy.as_deref(), ep.local_only.as_deref())
            .await
            .ok()?;
        let body = serde_json::json!({"content": text, "add_special": false, "model": model, "prompt": text, "add_special_tokens": false});
        let rb = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        let (status, body) = self.fetch(rb, ep.api_key.as_ref(), within).await.ok()?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_slice(&body).ok()?;
        v.get("count")
            .and_then(Value::as_u64)
            .or_else(|| v.get("tokens")?.as_array().map(|a| a.len() as u64))
    }

    /// Probes a health URL (`localService.healthUrl`, `/ready`).
    pub async fn health(&self, url: &str, key: Option<&Secret>, within: Duration) -> Health {
        match self.get_raw(url, key, within).await {
            Ok((s, _)) if (200..300).contains(&s) => Health::Ready,
            Ok((s, body)) => {
                let e = WireError::from_status(s, &body, None);
                if e.is_loading() {
                    Health::Loading(e.message)
                } else {
                    Health::Down(format!("HTTP {s}: {}", e.message))
                }
            }
            Err(e) => Health::Down(e.message),
        }
    }

    /// Asks the server at `base_url` what it serves (LOC-3). The OpenAI
    /// model list first, then the server's native API where the list says
    /// (or, for an unrecognised local server, suggests) which one it is.
    pub async fn introspect(
        &self,
        base_url: &str,
        key: Option<&Secret>,
        within: Duration,
    ) -> Result<ServerInfo, WireError> {
        let base = base_url.trim_end_matches('/');
        let origin = origin(base).unwrap_or(base).to_string();
        let listed = self.get_json(&format!("{base}/models"), key, within).await;
        let mut info = match &listed {
            Ok(v) => parse_openai_models(v),
            Err(_) => ServerInfo {
                kind: ServerKind::OpenAi,
                models: Vec::new(),
                slots: None,
            },
        };
        // Native APIs: the one the list pointed at, else each in turn.
        let tries: &[ServerKind] = match info.kind {
            ServerKind::LlamaCpp => &[ServerKind::LlamaCpp],
            ServerKind::Vllm => &[],
            ServerKind::LmStudio => &[ServerKind::LmStudio],
            ServerKind::Ollama => &[ServerKind::Ollama],
            ServerKind::OpenAi => &[
                ServerKind::LmStudio,
                ServerKind::Ollama,
                ServerKind::LlamaCpp,
            ],
        };
        for kind in tries {
            let found = match kind {
                ServerKind::LlamaCpp => {
                    match self.get_json(&format!("{origin}/props"), key, within).await {
                        Ok(props) => {
                            apply_llamacpp_props(&mut info, &props);
                            true
                        }
                        Err(_) => false,
                    }
                }
                ServerKind::LmStudio => match self
                    .get_json(&format!("{origin}/api/v0/models"), key, within)
                    .await
                {
                    // LM Studio only when the answer has LM Studio's own
                    // fields: another server answering the path (a proxy
                    // that maps every path to its list) is not it.
                    Ok(v) => match parse_lmstudio_models(&v) {
                        m if m.is_empty() => false,
                        m => merge(&mut info, ServerKind::LmStudio, m),
                    },
                    Err(_) => false,
                },
                ServerKind::Ollama => self.ollama(&mut info, &origin, key, within).await,
                _ => false,
            };
            if found {
                break;
            }
        }
        if listed.is_err() && info.models.is_empty() {
            return Err(listed
                .err()
                .unwrap_or_else(|| WireError::new(WireErrorKind::Malformed, "no model list")));
        }
        Ok(info)
    }

    async fn ollama(
        &self,
        info: &mut ServerInfo,
        origin: &str,
        key: Option<&Secret>,
        within: Duration,
    ) -> bool {
        let Ok(tags) = self
            .get_json(&format!("{origin}/api/tags"), key, within)
            .await
        else {
            return false;
        };
        let mut models = parse_ollama_tags(&tags);
        if models.is_empty() && tags.get("models").is_none() {
            return false;
        }
        let running = self
            .get_json(&format!("{origin}/api/ps"), key, within)
            .await
            .map(|v| parse_ollama_ps(&v))
            .unwrap_or_default();
        // `/api/show` is one call per model: the first ones only.
        for m in models.iter_mut().take(OLLAMA_SHOW_MAX) {
            let run = running.iter().find(|r| r.id == m.id);
            m.loaded = Some(run.is_some());
            if let Some(ctx) = run.and_then(|r| r.context) {
                m.context = Some(ctx);
            }
            let body = serde_json::json!({ "model": m.id });
            if let Ok((200, bytes)) = self
                .post_raw(&format!("{origin}/api/show"), key, &body, within)
                .await
            {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    let (num_ctx, trained) = parse_ollama_show(&v);
                    m.max_context = trained.or(m.max_context);
                    if m.context.is_none() {
                        m.context = num_ctx;
                    }
                }
            }
        }
        merge(info, ServerKind::Ollama, models)
    }

    async fn get_json(
        &self,
        url: &str,
        key: Option<&Secret>,
        within: Duration,
    ) -> Result<Value, WireError> {
        let (status, body) = self.get_raw(url, key, within).await?;
        if !(200..300).contains(&status) {
            return Err(WireError::from_status(status, &body, None));
        }
        serde_json::from_slice(&body)
            .map_err(|e| WireError::new(WireErrorKind::Malformed, format!("not JSON: {e}")))
    }
}

/// Merges native-API facts into the list: entries the OpenAI list lacked
/// are added. Returns whether the native API answered.
fn merge(info: &mut ServerInfo, kind: ServerKind, native: Vec<ServedModel>) -> bool {
    info.kind = kind;
    for n in native {
        match info
            .models
            .iter_mut()
            .find(|m| m.id.eq_ignore_ascii_case(&n.id))
        {
            Some(m) => {
                m.loaded = n.loaded.or(m.loaded);
                m.context = n.context.or(m.context);
                m.max_context = n.max_context.or(m.max_context);
            }
            None => info.models.push(n),
        }
    }
    true
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64().filter(|n| *n > 0)
}

/// `GET /v1/models` of any OpenAI-compatible server. llama.cpp adds
/// `meta.n_ctx` (per slot) and `n_ctx_train`; vLLM and SGLang add
/// `max_model_len`; `owned_by` names the software.
pub fn parse_openai_models(v: &Value) -> ServerInfo {
    let mut kind = ServerKind::OpenAi;
    let models = v
        .get("data")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let id = r.get("id")?.as_str()?.to_string();
                    let owner = r.get("owned_by").and_then(Value::as_str).unwrap_or("");
                    let mut m = ServedModel {
                        id,
                        ..ServedModel::default()
                    };
                    if owner == "llamacpp" || r.get("meta").is_some() {
                        kind = ServerKind::LlamaCpp;
                        m.context = u64_at(r, &["meta", "n_ctx"]);
                        m.max_context = u64_at(r, &["meta", "n_ctx_train"]);
                    } else if owner == "vllm"
                        || owner == "sglang"
                        || r.get("max_model_len").is_some()
                    {
                        kind = ServerKind::Vllm;
                        m.context = u64_at(r, &["max_model_len"]);
                        m.max_context = m.context;
                    } else if owner == "library" || owner == "ollama" {
                        kind = ServerKind::Ollama;
                    } else if owner == "organization_owner" {
                        kind = ServerKind::LmStudio;
                    }
                    Some(m)
                })
                .collect()
        })
        .unwrap_or_default();
    ServerInfo {
        kind,
        models,
        slots: None,
    }
}

/// llama.cpp `GET /props`: `default_generation_settings.n_ctx` is what one
/// slot (one request) gets; `total_slots` how many run at once.
pub fn apply_llamacpp_props(info: &mut ServerInfo, props: &Value) {
    info.kind = ServerKind::LlamaCpp;
    info.slots = u64_at(props, &["total_slots"]);
    let Some(n_ctx) = u64_at(props, &["default_generation_settings", "n_ctx"]) else {
        return;
    };
    let alias = props.get("model_alias").and_then(Value::as_str);
    if info.models.is_empty() {
        if let Some(a) = alias {
            info.models.push(ServedModel {
                id: a.to_string(),
                loaded: Some(true),
                context: Some(n_ctx),
                max_context: None,
            });
        }
    }
    // One server, one model: every listed id is that model.
    for m in &mut info.models {
        m.context = Some(n_ctx);
        m.loaded = Some(true);
    }
}

/// LM Studio `GET /api/v0/models`: `state` (`loaded` / `not-loaded`),
/// `max_context_length`, and `loaded_context_length` once loaded.
pub fn parse_lmstudio_models(v: &Value) -> Vec<ServedModel> {
    v.get("data")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                // LM Studio's rows say their state or context; a row
                // without either is another server's.
                .filter(|r| r.get("state").is_some() || r.get("max_context_length").is_some())
                .filter_map(|r| {
                    let id = r.get("id")?.as_str()?.to_string();
                    let state = r.get("state").and_then(Value::as_str);
                    let max = u64_at(r, &["max_context_length"]);
                    Some(ServedModel {
                        id,
                        loaded: state.map(|s| s == "loaded"),
                        context: u64_at(r, &["loaded_context_length"]),
                        max_context: max,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rows of an Ollama list (`/api/tags`, `/api/ps`), named by `name`
/// (or `model`).
fn ollama_rows(v: &Value, row: impl Fn(String, &Value) -> ServedModel) -> Vec<ServedModel> {
    v.get("models")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let id = r.get("name").or_else(|| r.get("model"))?.as_str()?;
                    Some(row(id.to_string(), r))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Ollama `GET /api/tags`: the installed models.
pub fn parse_ollama_tags(v: &Value) -> Vec<ServedModel> {
    ollama_rows(v, |id, _| ServedModel {
        id,
        ..ServedModel::default()
    })
}

/// Ollama `GET /api/ps`: the loaded models, with `context_length` (the
/// context they were loaded with) on current versions.
pub fn parse_ollama_ps(v: &Value) -> Vec<ServedModel> {
    ollama_rows(v, |id, r| ServedModel {
        id,
        loaded: Some(true),
        context: u64_at(r, &["context_length"]),
        max_context: None,
    })
}

/// Ollama `POST /api/show`: `num_ctx` from the Modelfile `parameters`
/// text (what a request gets unless it asks otherwise) and the trained
/// maximum `<arch>.context_length` in `model_info`.
pub fn parse_ollama_show(v: &Value) -> (Option<u64>, Option<u64>) {
    let num_ctx = v
        .get("parameters")
        .and_then(Value::as_str)
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some("num_ctx"))
                    .then(|| it.next()?.parse::<u64>().ok())
                    .flatten()
            })
        })
        .filter(|n| *n > 0);
    let trained = v
        .get("model_info")
        .and_then(Value::as_object)
        .and_then(|mi| {
            mi.iter()
                .find(|(k, _)| k.ends_with(".context_length"))
                .and_then(|(_, v)| v.as_u64())
        })
        .filter(|n| *n > 0);
    (num_ctx, trained)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn origins() {
        assert_eq!(
            origin("http://127.0.0.1:1234/v1"),
            Some("http://127.0.0.1:1234")
        );
        assert_eq!(origin("http://h:8080"), Some("http://h:8080"));
        assert_eq!(origin("nope"), None);
    }

    #[test]
    fn loading_answers() {
        let e = WireError::from_status(
            503,
            br#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#,
            None,
        );
        assert!(e.is_loading());
        let busy = WireError::from_status(503, br#"{"error":{"message":"busy"}}"#, None);
        assert!(!busy.is_loading());
        let other = WireError::from_status(500, br#"{"error":{"message":"Loading model"}}"#, None);
        assert!(!other.is_loading());
    }

    #[test]
    fn lmstudio_shapes() {
        let v = json!({"object":"list","data":[
            {"id":"qwen3-8b","object":"model","type":"llm","state":"loaded","max_context_length":40960,"loaded_context_length":8192},
            {"id":"gemma","state":"not-loaded","max_context_length":131072}
        ]});
        let m = parse_lmstudio_models(&v);
        assert_eq!(m[0].loaded, Some(true));
        assert_eq!(m[0].context, Some(8192));
        assert_eq!(m[1].loaded, Some(false));
        assert_eq!(m[1].context, None);
        assert_eq!(m[1].max_context, Some(131072));
        // A plain OpenAI list at that path is not LM Studio's.
        let plain =
            json!({"object":"list","data":[{"id":"tiny","object":"model","owned_by":"llamacpp"}]});
        assert!(parse_lmstudio_models(&plain).is_empty());
    }

    #[test]
    fn vllm_and_ollama_shapes() {
        let v = json!({"object":"list","data":[{"id":"Qwen/Qwen3-8B","object":"model","owned_by":"vllm","max_model_len":32768}]});
        let info = parse_openai_models(&v);
        assert_eq!(info.kind, ServerKind::Vllm);
        assert_eq!(info.models[0].context, Some(32768));
        let ps = json!({"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","context_length":8192}]});
        assert_eq!(parse_ollama_ps(&ps)[0].context, Some(8192));
        let show = json!({"parameters":"stop \"<|eot|>\"\nnum_ctx                        16384","model_info":{"llama.context_length":131072}});
        assert_eq!(parse_ollama_show(&show), (Some(16384), Some(131072)));
        let info = ServerInfo {
            kind: ServerKind::Ollama,
            models: parse_ollama_tags(&json!({"models":[{"name":"llama3.2:latest"}]})),
            slots: None,
        };
        assert!(info.model("llama3.2").is_some());
    }
}
