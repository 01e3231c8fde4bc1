//! API keys with scopes. The config holds each key's SHA-256, never the key;
//! a presented key is hashed and compared with every configured hash in
//! constant time. Keys are 256-bit random, so an unsalted hash is enough
//! (nothing to brute-force); they are never logged, only their names.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Customer scores (single and batch), models, snapshot.
    ScoresRead,
    /// Campaign contact lists.
    AudiencesRead,
    /// Reloading the snapshot.
    Admin,
}

impl Scope {
    pub const NAMES: [&'static str; 3] = ["scores:read", "audiences:read", "admin"];

    pub fn name(self) -> &'static str {
        match self {
            Scope::ScoresRead => Self::NAMES[0],
            Scope::AudiencesRead => Self::NAMES[1],
            Scope::Admin => Self::NAMES[2],
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        [Scope::ScoresRead, Scope::AudiencesRead, Scope::Admin].into_iter().find(|s| s.name() == name)
    }
}

/// A configured key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
}

/// Who may call: the configured keys, or anyone when auth is off.
#[derive(Debug, Clone)]
pub struct Keys {
    keys: Vec<ApiKey>,
    open: bool,
}

impl Keys {
    pub fn new(keys: Vec<ApiKey>, open: bool) -> Keys {
        Keys { keys, open }
    }

    /// The name of the caller's key if it holds `scope`: 401 without a
    /// (known) key, 403 with a key lacking the scope.
    pub fn authorize(&self, req: &HttpRequest, scope: Scope) -> Result<String, ApiError> {
        if self.open {
            return Ok("anonymous".into());
        }
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        self.authorize_key(presented, scope)
    }

    /// True when auth is off (`insecure_no_auth`).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The name of key `presented` if it holds `scope` (the check of
    /// [`Keys::authorize`], for a key typed into the dashboard's form).
    pub fn authorize_key(&self, presented: &str, scope: Scope) -> Result<String, ApiError> {
        if self.open {
            return Ok("anonymous".into());
        }
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare with every key (no early exit), each in constant time.
        let mut found: Option<&ApiKey> = None;
        for key in &self.keys {
            if bool::from(key.sha256.ct_eq(&hash)) {
                found = Some(key);
            }
        }
        let key = found.ok_or(ApiError::Unauthorized)?;
        if key.scopes.contains(&scope) {
            Ok(key.name.clone())
        } else {
            Err(ApiError::Forbidden(scope.name()))
        }
    }
}

/// Dashboard sessions: a browser that signed in with an API key holds a
/// random token in an HttpOnly cookie; the server keeps the token's
/// SHA-256 with the key's name until it expires (or the server restarts).
/// The key itself is never stored, nor put in a URL.
#[derive(Debug)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    ttl: Duration,
}

/// Sessions held at most at once; past it, the oldest goes.
const MAX_SESSIONS: usize = 10_000;

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions { open: Mutex::default(), ttl }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for key `name`: its token, for the cookie.
    pub fn start(&self, name: &str) -> String {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = hex(&bytes);
        let now = Instant::now();
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, (_, expires)| *expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| *k)
        {
            open.remove(&oldest);
        }
        open.insert(Sha256::digest(token.as_bytes()).into(), (name.to_string(), now + self.ttl));
        token
    }

    /// The key name of a live session `token`.
    pub fn check(&self, token: &str) -> Option<String> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let open = self.open.lock().expect("sessions lock");
        open.get(&hash).filter(|(_, expires)| *expires > Instant::now()).map(|(name, _)| name.clone())
    }

    /// Ends session `token`.
    pub fn end(&self, token: &str) {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.open.lock().expect("sessions lock").remove(&hash);
    }
}

/// A new random key (`ek_` and 64 hex digits) and its hex SHA-256, for the
/// config.
pub fn generate_key() -> (String, String) {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = format!("ek_{}", hex(&bytes));
    let hash = hex(&Sha256::digest(key.as_bytes()));
    (key, hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An identifier as it may appear in logs: emails keep their first
/// character and domain (`a***@example.com`), phones their last two digits,
/// other identifiers their first two characters.
pub fn mask(id_type: &str, id: &str) -> String {
    match id_type {
        "email" => match id.split_once('@') {
            Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
            None => "***".into(),
        },
        "phone" => {
            let digits: Vec<char> = id.chars().filter(char::is_ascii_digit).collect();
            let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
            format!("***{tail}")
        }
        _ => format!("{}***", id.chars().take(2).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_hash_to_their_config_value() {
        let (key, hash) = generate_key();
        assert!(key.starts_with("ek_") && key.len() == 67, "{key}");
        assert_eq!(hash, hex(&Sha256::digest(key.as_bytes())));
        assert_ne!(generate_key().0, key);
    }

    #[test]
    fn sessions_answer_until_they_end_or_expire() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let token = sessions.start("marketing");
        assert_eq!(sessions.check(&token).as_deref(), Some("marketing"));
        assert_eq!(sessions.check("not-a-token"), None);
        sessions.end(&token);
        assert_eq!(sessions.check(&token), None);
        let brief = Sessions::new(Duration::ZERO);
        let token = brief.start("marketing");
        assert_eq!(brief.check(&token), None, "an expired session answers nothing");
    }

    #[test]
    fn masks_keep_too_little_to_identify() {
        assert_eq!(mask("email", "ann.lee@example.com"), "a***@example.com");
        assert_eq!(mask("phone", "+15550000123"), "***23");
        assert_eq!(mask("loyalty_id", "L000123"), "L0***");
        assert_eq!(mask("email", "nonsense"), "***");
    }
}
