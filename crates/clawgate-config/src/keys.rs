//! Key sets per config section: what clawgate implements, and what OpenClaw
//! has there that clawgate accepts but does not act on (one warning each,
//! CFG-4). Anything in neither list is an error with a nearest-key hint.

pub const ROOT: &[&str] = &["agents", "models", "gateway", "auth", "env", "secrets"];
pub const SECRETS: &[&str] = &["providers", "defaults", "resolution"];
pub const SECRET_PROVIDER: &[&str] = &[
    "source",
    "allowlist",
    "path",
    "mode",
    "allowInsecurePath",
    "command",
    "args",
    "passEnv",
    "jsonOnly",
    "allowSymlinkCommand",
    "trustedDirs",
    "timeoutMs",
    "noOutputTimeoutMs",
    "maxOutputBytes",
];
/// OpenClaw top-level sections outside the model layer.
pub const ROOT_FOREIGN: &[&str] = &[
    "$schema",
    "$include",
    "meta",
    "wizard",
    "diagnostics",
    "logging",
    "update",
    "browser",
    "ui",
    "tools",
    "bindings",
    "broadcast",
    "audio",
    "messages",
    "commands",
    "approvals",
    "session",
    "cron",
    "hooks",
    "web",
    "channels",
    "discovery",
    "canvasHost",
    "talk",
    "memory",
    "skills",
    "plugins",
    "acp",
    "mcp",
    "media",
    "nodeHost",
    "identity",
    "agent",
    "routing",
    "heartbeat",
    "sandbox",
    "telemetry",
    "voice",
    "experimental",
];

pub const ENV_FOREIGN: &[&str] = &["shellEnv"];

pub const AGENTS: &[&str] = &["defaults", "entries"];

pub const AGENT: &[&str] = &[
    "model",
    "models",
    "modelPolicy",
    "timeoutSeconds",
    "compaction",
    "dataPolicy",
    "contextTokens",
    "params",
    "tools",
];
pub const AGENT_FOREIGN: &[&str] = &[
    "workspace",
    "repoRoot",
    "skipBootstrap",
    "bootstrapMaxChars",
    "bootstrapTotalMaxChars",
    "userTimezone",
    "timeFormat",
    "imageModel",
    "pdfModel",
    "imageMaxDimensionPx",
    "elevatedDefault",
    "thinkingDefault",
    "reasoningDefault",
    "verboseDefault",
    "blockStreamingDefault",
    "blockStreamingBreak",
    "blockStreamingChunk",
    "blockStreamingCoalesce",
    "humanDelay",
    "typingMode",
    "typingIntervalSeconds",
    "heartbeat",
    "maxConcurrent",
    "subagents",
    "sandbox",
    "contextPruning",
    "memorySearch",
    "cliBackends",
    "mediaMaxMb",
    "envelopeTimezone",
    "envelopeTimestamp",
    "envelopeElapsed",
    "contextLimits",
    "utilityModel",
    "mediaModels",
    "experimental",
    "skills",
    "identity",
    "groupChat",
    "agentRuntime",
    "name",
    "default",
    "agentDir",
    "llm",
    "memory",
    "runtime",
];

pub const MODEL_SELECTION: &[&str] = &["primary", "fallbacks"];
pub const MODEL_OPTIONS: &[&str] = &["alias", "params"];
pub const MODEL_OPTIONS_FOREIGN: &[&str] = &["agentRuntime"];
pub const MODEL_POLICY: &[&str] = &["allow"];

pub const COMPACTION: &[&str] = &[
    "mode",
    "enabled",
    "keepRecentTokens",
    "reserveTokens",
    "reserveTokensFloor",
    "model",
    "timeoutSeconds",
];
pub const COMPACTION_FOREIGN: &[&str] = &[
    "memoryFlush",
    "recentTurnsPreserve",
    "thinkingLevel",
    "qualityGuard",
    "postCompactionSections",
    "identifierPolicy",
    "customInstructions",
    "notifyUser",
    "provider",
    "maxHistoryShare",
];

pub const MODELS: &[&str] = &["mode", "providers"];
pub const MODELS_FOREIGN: &[&str] = &["catalogRefresh", "pricing", "bedrockDiscovery"];

pub const PROVIDER: &[&str] = &[
    "baseUrl",
    "baseURL",
    "apiKey",
    "api",
    "headers",
    "timeoutSeconds",
    "request",
    "localService",
    "maxConcurrent",
    "spillAfterMs",
    "models",
    "maxTokens",
    "contextWindow",
    "contextTokens",
    "params",
];
pub const PROVIDER_FOREIGN: &[&str] = &[
    "auth",
    "authHeader",
    "injectNumCtxForOpenAICompat",
    "agentRuntime",
    "region",
    "name",
];

pub const REQUEST: &[&str] = &["allowPrivateNetwork", "allowSpecialUseAddresses", "headers"];
pub const REQUEST_FOREIGN: &[&str] = &["auth", "proxy", "tls"];

pub const LOCAL_SERVICE: &[&str] = &[
    "command",
    "args",
    "cwd",
    "env",
    "healthUrl",
    "readyTimeoutMs",
    "idleStopMs",
    "group",
    "warmUp",
];

pub const MODEL: &[&str] = &[
    "id",
    "name",
    "reasoning",
    "input",
    "cost",
    "contextWindow",
    "contextTokens",
    "maxTokens",
    "compat",
    "params",
    "api",
    "baseUrl",
    "headers",
];
pub const MODEL_FOREIGN: &[&str] = &[
    "agentRuntime",
    "mediaInput",
    "metadataSource",
    "contextWindows",
    "contextWindowDefault",
    "thinkingLevelMap",
    "status",
    "replaces",
    "replacedBy",
    "tags",
];

pub const COST: &[&str] = &["input", "output", "cacheRead", "cacheWrite"];
pub const COST_FOREIGN: &[&str] = &["tieredPricing"];

pub const COMPAT: &[&str] = &[
    "requiresStringContent",
    "strictMessageKeys",
    "supportsTools",
    "supportedReasoningEfforts",
    "reasoningEffortMap",
    "maxTokensField",
    "supportsUsageInStreaming",
    "supportsDeveloperRole",
];

pub const GATEWAY: &[&str] = &["bind", "port", "auth", "http"];
pub const GATEWAY_FOREIGN: &[&str] = &[
    "mode",
    "controlUi",
    "tailscale",
    "remote",
    "reload",
    "tls",
    "trustedProxies",
    "customBindHost",
    "nodes",
    "push",
    "channelHealthCheckMinutes",
    "allowRealIpFallback",
    "webchat",
    "canvasHost",
];
pub const GATEWAY_AUTH: &[&str] = &["mode", "token", "password"];
pub const GATEWAY_AUTH_FOREIGN: &[&str] = &["allowTailscale", "rateLimit", "trustedProxy"];
pub const GATEWAY_HTTP: &[&str] = &["endpoints", "allowedHosts"];
pub const GATEWAY_ENDPOINTS: &[&str] = &["chatCompletions", "responses", "messages", "models"];
pub const GATEWAY_ENDPOINT: &[&str] = &["enabled"];

pub const AUTH: &[&str] = &["profiles", "order"];
pub const AUTH_FOREIGN: &[&str] = &["cooldowns"];
pub const AUTH_PROFILE: &[&str] = &["provider", "apiKey", "mode"];
pub const AUTH_PROFILE_FOREIGN: &[&str] = &["email"];

/// The nearest candidate to a mistyped key, if it is close enough to be a
/// plausible typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(d, c)| *d <= (c.len() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(nearest("contextWindw", MODEL), Some("contextWindow"));
        assert_eq!(nearest("basUrl", PROVIDER), Some("baseUrl"));
        assert_eq!(nearest("fallback", MODEL_SELECTION), Some("fallbacks"));
        assert_eq!(nearest("zzzzzz", MODEL), None);
    }
}
