//! How proprio proves who it is to NATS and checks the server: the
//! credential and TLS settings, and keeping credentials found in URLs out of
//! logs and messages.

use anyhow::{anyhow, bail, Context as _, Result};

/// How proprio proves who it is to NATS, and how it checks the server.
/// Any combination the server accepts: user and password, a token, a
/// credentials file (JWT + NKey, as `nsc` writes them) or an NKey seed
/// file; TLS with a private CA and/or a client certificate.
#[derive(Clone, Default, PartialEq)]
pub struct NatsSecurity {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A `.creds` file (user JWT and NKey seed).
    pub creds: Option<std::path::PathBuf>,
    /// A file holding an NKey seed (`SU...`), for NKey authentication.
    pub nkey: Option<std::path::PathBuf>,
    /// CA certificate(s) (PEM) the server's certificate must chain to.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
}

impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsSecurity")
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("token", &redact(&self.token))
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

impl NatsSecurity {
    /// Checks the combination and that the files are there, naming the
    /// configuration key at fault.
    pub fn check(&self) -> Result<()> {
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds.is_some(),
            self.nkey.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if methods > 1 {
            bail!("nats: give one of user/password, token, creds or nkey, not several");
        }
        if self.password.is_some() && self.user.is_none() {
            bail!("nats.password is set but nats.user is not");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("nats.tls_cert and nats.tls_key go together: give both or neither");
        }
        let files = [
            ("nats.creds", &self.creds),
            ("nats.nkey", &self.nkey),
            ("nats.tls_ca", &self.tls_ca),
            ("nats.tls_cert", &self.tls_cert),
            ("nats.tls_key", &self.tls_key),
        ];
        for (key, p) in files {
            if let Some(p) = p {
                std::fs::File::open(p)
                    .with_context(|| format!("{key}: cannot read {}", p.display()))?;
            }
        }
        Ok(())
    }

    /// Applies the settings to `opts`, after [`NatsSecurity::check`].
    pub(super) async fn apply(
        &self,
        mut opts: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions> {
        self.check()?;
        if let Some(u) = &self.user {
            opts = opts.user_and_password(u.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(t) = &self.token {
            opts = opts.token(t.clone());
        }
        if let Some(p) = &self.creds {
            opts = opts.credentials_file(p).await.with_context(|| {
                format!("nats.creds: {} is not a credentials file", p.display())
            })?;
        }
        if let Some(p) = &self.nkey {
            let seed = std::fs::read_to_string(p)
                .with_context(|| format!("nats.nkey: reading {}", p.display()))?;
            let seed = seed
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with('S') && l.len() > 40)
                .ok_or_else(|| anyhow!("nats.nkey: {} holds no NKey seed (SU...)", p.display()))?;
            opts = opts.nkey(seed.to_string());
        }
        if let Some(p) = &self.tls_ca {
            opts = opts.add_root_certificates(p.clone());
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            opts = opts.add_client_certificate(c.clone(), k.clone());
        }
        if self.tls_required || self.tls_ca.is_some() || self.tls_cert.is_some() {
            opts = opts.require_tls(true);
        }
        Ok(opts)
    }

    /// Whether any authentication method is configured.
    pub(super) fn has_method(&self) -> bool {
        self.user.is_some() || self.token.is_some() || self.creds.is_some() || self.nkey.is_some()
    }

    /// What to check when the server refuses: the method in use.
    pub(super) fn hint(&self) -> &'static str {
        if self.creds.is_some() {
            "check nats.creds"
        } else if self.nkey.is_some() {
            "check nats.nkey"
        } else if self.token.is_some() {
            "check nats.token"
        } else if self.user.is_some() {
            "check nats.user and nats.password"
        } else {
            "the server requires credentials: set nats.user/nats.password, nats.token, nats.creds or nats.nkey"
        }
    }
}

/// A connection error about TLS, whatever kind async-nats filed it under
/// (a refused certificate arrives as an IO error).
pub(super) fn is_tls_error(e: &async_nats::ConnectError) -> bool {
    let text = format!("{e:#} {e:?}").to_lowercase();
    e.kind() == async_nats::ConnectErrorKind::Tls
        || ["certificate", "tls", "handshake", "unknownissuer"]
            .iter()
            .any(|w| text.contains(w))
}

/// Takes credentials out of NATS URLs (`nats://user:pass@host:4222`, or
/// `nats://token@host`; a comma-separated list too): the URLs without them,
/// and the first credentials found, as (user or token, password).
pub(super) fn split_url_credentials(urls: &str) -> (String, Option<(String, Option<String>)>) {
    let mut found = None;
    let clean: Vec<String> = urls
        .split(',')
        .map(|u| {
            let u = u.trim();
            let (scheme, rest) = match u.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, u),
            };
            let (auth, host) = match rest.rsplit_once('@') {
                Some((a, h)) if !a.contains('/') => (Some(a), h),
                _ => (None, rest),
            };
            if let Some(a) = auth.filter(|a| !a.is_empty()) {
                let creds = match a.split_once(':') {
                    Some((user, pass)) => (user.to_string(), Some(pass.to_string())),
                    None => (a.to_string(), None),
                };
                found.get_or_insert(creds);
            }
            match scheme {
                Some(s) => format!("{s}://{host}"),
                None => host.to_string(),
            }
        })
        .collect();
    (clean.join(","), found)
}

/// NATS URLs fit to print: credentials in them replaced by `<redacted>`.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            let (clean, creds) = split_url_credentials(u);
            let Some((user, pass)) = creds else {
                return u.to_string();
            };
            let shown = match pass {
                Some(_) => format!("{user}:<redacted>@"),
                None => "<redacted>@".to_string(),
            };
            match clean.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{shown}{host}"),
                None => format!("{shown}{clean}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
