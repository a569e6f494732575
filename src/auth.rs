//! HTTP Basic authentication (RFC 7617) against an htpasswd file of bcrypt entries
//! (`--auth-file FILE`).
//!
//! # The exchange
//!
//! A request without valid credentials is answered `401 Unauthorized` with a
//! `WWW-Authenticate` challenge ([`BasicAuth::challenge`]: `Basic realm="…", charset="UTF-8"`,
//! RFC 7617 §2 and §2.1). The browser asks its user and repeats the request with
//! `Authorization: Basic <base64 of user:password>` (§2); [`BasicAuth::check`] decodes and
//! verifies it. How the header is read (every spelling is attacked by the tests):
//!
//! - the scheme is case-insensitive (`Basic`, `basic`, `BASIC`; RFC 9110 §11.1), followed by one
//!   or more spaces and the credentials as token68 (RFC 9110 §11.4), i.e. standard Base64 with
//!   padding (RFC 4648 §4);
//! - the decoded bytes are UTF-8 (the `charset="UTF-8"` of the challenge, §2.1) and split at the
//!   *first* colon: the user-id cannot contain one, the password can (§2);
//! - control characters in either are refused (§2: they "MUST NOT" appear).
//!
//! # The file
//!
//! The format Apache's `htpasswd` writes (and nginx's `auth_basic_user_file` reads): one
//! `user:hash` per line; blank lines and lines starting with `#` are skipped; a third field
//! after another colon is a comment (nginx's `user:hash:comment`). Only bcrypt hashes are
//! accepted (`$2y$` from `htpasswd -B`, and `$2b$`/`$2a$` from other tools): Apache's MD5
//! (`$apr1$`), SHA-1 (`{SHA}`), DES `crypt` and plain text are fast to brute-force if the file
//! leaks. Any other entry, a line without a colon, an empty user or a user defined twice is an
//! error naming `file:line`, at start and on every re-read, so a typo is noticed instead of
//! silently locking a user out. Like bcrypt itself (and `htpasswd`), only the first 72 bytes of
//! a password count.
//!
//! The file is re-read when it changes, the way [`crate::tokens`] re-reads token files: each
//! check compares the file's modification time, size and inode with the ones seen at the last
//! load. A file that becomes unusable (removed, unreadable, a bad line) fails closed: every
//! check answers [`AuthFailure::Unavailable`] until it is fixed.
//!
//! # Timing
//!
//! A bcrypt verification costs milliseconds (cost 5, `htpasswd -B`'s default) to hundreds of
//! milliseconds (cost 12); that is the point of bcrypt. So that an attacker cannot tell
//! unknown users from known ones by the time an answer takes, a check for an unknown user
//! verifies the password against a decoy: an existing entry with the cost most entries use,
//! and then fails. The comparison of the hashes is bcrypt's own, constant-time
//! (`subtle::ConstantTimeEq`); nothing here compares secrets with `==`. (Entries with different
//! costs take different times, so keep one cost in a file.)
//!
//! # In the log
//!
//! [`AuthFailure`]'s `Display` is a reason for the log that contains neither the password nor
//! the user name. The user name, which is client text, is available separately
//! ([`AuthFailure::user`]) so that the log line can include it *escaped*.
//!
//! # How the proxy uses this
//!
//! `--auth-file FILE` opens a [`BasicAuth`] at start (`BasicAuth::open(path, "wsproxy")`; an
//! error is a one-line startup error, exit 2). For every request — WebSocket upgrades and
//! static files alike — right after the request head is parsed and before the Host/Origin
//! checks, the target lookup and any upgrade, the connection calls
//! `auth.check(request.header("Authorization"))` (a request with more than one Authorization
//! header is refused as malformed before that). On `Ok(user)` it goes on and logs the user
//! with the tunnel; on `Err(failure)` it answers `failure.http_status()` — 401 with the
//! `WWW-Authenticate: {auth.challenge()}` header, or 500 when the file is unusable — and logs
//! `failure` plus `failure.user()` passed through the log escape helper of `logging.rs`.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bcrypt::HashParts;

/// The bcrypt prefixes accepted (`$2x$` marks hashes of a flawed implementation).
const BCRYPT_PREFIXES: [&str; 3] = ["$2y$", "$2b$", "$2a$"];

/// The cost range bcrypt defines (log2 of the rounds).
const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// An htpasswd file and the realm of its challenge. Share it in an `Arc`; [`check`](Self::check)
/// takes `&self`.
#[derive(Debug)]
pub struct BasicAuth {
    path: PathBuf,
    realm: String,
    cache: Mutex<Loaded>,
}

/// One load of the file, remembered with the stamp it was loaded at.
#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    users: Result<Arc<Users>, String>,
}

/// What the file looked like on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

#[derive(Debug)]
struct Users {
    /// user → bcrypt hash.
    hashes: HashMap<String, String>,
    /// The hash an unknown user's password is verified against (see "Timing").
    decoy: String,
}

/// Why a request is not authenticated. `Display` is a reason for the log without the password
/// or the user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    NoCredentials,
    /// An `Authorization` header with another scheme (Bearer, Digest, …).
    OtherScheme,
    /// `Basic`, but not decodable as RFC 7617 credentials.
    Malformed(&'static str),
    /// A user the file does not define.
    UnknownUser { user: String },
    /// A known user with a password that does not match.
    WrongPassword { user: String },
    /// The file cannot be used right now (the reason names the file and line).
    Unavailable(String),
}

impl AuthFailure {
    /// The user name the client sent, if it got that far. Client text: escape it for the log.
    pub fn user(&self) -> Option<&str> {
        match self {
            AuthFailure::UnknownUser { user } | AuthFailure::WrongPassword { user } => Some(user),
            _ => None,
        }
    }

    /// 401 for anything the client can fix by sending credentials (RFC 7617 §2, RFC 9110
    /// §15.5.2), 500 when the server's own file is unusable.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthFailure::Unavailable(_) => 500,
            _ => 401,
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::NoCredentials => f.write_str("no credentials (no Authorization header)"),
            AuthFailure::OtherScheme => f.write_str("the Authorization header is not Basic"),
            AuthFailure::Malformed(why) => write!(f, "malformed Basic credentials: {why}"),
            AuthFailure::UnknownUser { .. } => f.write_str("unknown user"),
            AuthFailure::WrongPassword { .. } => f.write_str("wrong password"),
            AuthFailure::Unavailable(why) => write!(f, "authentication unavailable: {why}"),
        }
    }
}

impl BasicAuth {
    /// Loads the file once, so that a missing file or a bad line is reported at start.
    /// `realm` is named in the challenge; it must be printable text.
    pub fn open(path: &Path, realm: &str) -> Result<BasicAuth, String> {
        if realm.chars().any(char::is_control) {
            return Err(format!("the realm {realm:?} contains control characters"));
        }
        let stamp = stamp(path)?;
        let users = load(path)?;
        Ok(BasicAuth {
            path: path.to_path_buf(),
            realm: realm.to_string(),
            cache: Mutex::new(Loaded {
                stamp,
                users: Ok(Arc::new(users)),
            }),
        })
    }

    /// The `WWW-Authenticate` value of a 401 (RFC 7617 §2 and §2.1); the realm is a
    /// quoted-string (RFC 9110 §5.6.4).
    pub fn challenge(&self) -> String {
        let quoted = self.realm.replace('\\', "\\\\").replace('"', "\\\"");
        format!("Basic realm=\"{quoted}\", charset=\"UTF-8\"")
    }

    /// Checks the value of a request's `Authorization` header (`None`: there is none).
    /// `Ok` carries the authenticated user name (client text: escape it for the log).
    pub fn check(&self, authorization: Option<&str>) -> Result<String, AuthFailure> {
        let users = self.current().map_err(AuthFailure::Unavailable)?;
        let header = authorization.ok_or(AuthFailure::NoCredentials)?;
        let (user, password) = credentials(header)?;
        let (hash, known) = match users.hashes.get(&user) {
            Some(hash) => (hash.as_str(), true),
            None => (users.decoy.as_str(), false),
        };
        // Always exactly one verification, known user or not; an error is a mismatch.
        let matches = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false);
        match (known, matches) {
            (true, true) => Ok(user),
            (true, false) => Err(AuthFailure::WrongPassword { user }),
            (false, _) => Err(AuthFailure::UnknownUser { user }),
        }
    }

    /// The users as the file is now, re-read if it changed since the last load.
    fn current(&self) -> Result<Arc<Users>, String> {
        // The stat happens outside the lock; the bcrypt verification too (the caller).
        let stamp = stamp(&self.path)?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.stamp != stamp {
            // Stamp first, then read: a change during the read differs from the stored stamp,
            // so the next check reads the file again.
            let users = load(&self.path).map(Arc::new);
            *cache = Loaded { stamp, users };
        }
        cache.users.clone()
    }
}

fn stamp(path: &Path) -> Result<Stamp, String> {
    let meta = fs::metadata(path).map_err(|e| format!("auth file {}: {e}", path.display()))?;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Decodes `Basic <token68>` into the user-id and the password (RFC 7617 §2).
fn credentials(header: &str) -> Result<(String, String), AuthFailure> {
    let (scheme, token) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("Basic") {
        return Err(AuthFailure::OtherScheme);
    }
    let token = token.trim_start_matches(' ').trim_end();
    if token.is_empty() {
        return Err(AuthFailure::Malformed("nothing after `Basic`"));
    }
    let decoded = STANDARD
        .decode(token)
        .map_err(|_| AuthFailure::Malformed("not Base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| AuthFailure::Malformed("not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or(AuthFailure::Malformed("no `:` between user and password"))?;
    if text.chars().any(char::is_control) {
        return Err(AuthFailure::Malformed("control characters"));
    }
    Ok((user.to_string(), password.to_string()))
}

/// Reads and checks the whole file.
fn load(path: &Path) -> Result<Users, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("auth file {}: {e}", path.display()))?;
    let mut hashes = HashMap::new();
    let mut defined_on: HashMap<&str, usize> = HashMap::new();
    let mut costs: HashMap<u32, &str> = HashMap::new();
    let mut cost_counts: HashMap<u32, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |why: String| format!("{}:{}: {why}", path.display(), index + 1);
        let (user, rest) = line
            .split_once(':')
            .ok_or_else(|| at("expected `user:hash` (made with `htpasswd -B`)".into()))?;
        if user.is_empty() {
            return Err(at("empty user name".into()));
        }
        // nginx's optional third field, `user:hash:comment`.
        let hash = rest.split(':').next().unwrap_or("");
        let cost = bcrypt_cost(hash).map_err(|why| at(format!("user {user:?}: {why}")))?;
        if let Some(first) = defined_on.insert(user, index + 1) {
            return Err(at(format!(
                "user {user:?} is defined again (first on line {first})"
            )));
        }
        costs.entry(cost).or_insert(hash);
        *cost_counts.entry(cost).or_default() += 1;
        hashes.insert(user.to_string(), hash.to_string());
    }
    // The decoy: an entry of the most common cost (ties: the cheaper cost, deterministically).
    let decoy_cost = cost_counts
        .iter()
        .max_by_key(|&(&cost, &count)| (count, std::cmp::Reverse(cost)))
        .map(|(&cost, _)| cost)
        .ok_or_else(|| {
            format!(
                "auth file {}: no users (expected lines `user:$2y$…`, made with `htpasswd -B`)",
                path.display()
            )
        })?;
    Ok(Users {
        hashes,
        decoy: costs[&decoy_cost].to_string(),
    })
}

/// The cost of a bcrypt hash, or what the entry is instead.
fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    if !BCRYPT_PREFIXES
        .iter()
        .any(|prefix| hash.starts_with(prefix))
    {
        return Err(format!(
            "{}; only bcrypt ($2y$, $2b$, $2a$) is accepted: re-create the entry with \
             `htpasswd -B`",
            describe_hash(hash)
        ));
    }
    let parts: HashParts = hash
        .parse()
        .map_err(|e| format!("not a valid bcrypt hash ({e})"))?;
    let cost = parts.get_cost();
    if !BCRYPT_COSTS.contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4..=31"));
    }
    Ok(cost)
}

/// Names the kind of a non-bcrypt password field, for the error message.
fn describe_hash(hash: &str) -> &'static str {
    const DES_ALPHABET: &str = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    match hash {
        "" => "the password field is empty",
        h if h.starts_with("$apr1$") => "an Apache MD5 hash ($apr1$, `htpasswd -m`)",
        h if h.starts_with("{SHA}") => "a SHA-1 hash ({SHA}, `htpasswd -s`)",
        h if h.starts_with("$1$") => "an MD5-crypt hash ($1$)",
        h if h.starts_with("$5$") => "a SHA-256-crypt hash ($5$)",
        h if h.starts_with("$6$") => "a SHA-512-crypt hash ($6$)",
        h if h.starts_with("$2x$") => "a bcrypt $2x$ hash (made by a flawed implementation)",
        h if h.starts_with("$argon2") => "an Argon2 hash",
        h if h.len() == 13 && h.chars().all(|c| DES_ALPHABET.contains(c)) => {
            "a DES crypt hash (`htpasswd -d`)"
        }
        _ => "not a recognised hash (a plain-text password?)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "wsproxy-auth-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Runs Debian's `htpasswd` (apache2-utils) with `args`; `None` if it is not installed.
    fn htpasswd(args: &[&str]) -> Option<()> {
        let output = Command::new("htpasswd").args(args).output().ok()?;
        assert!(
            output.status.success(),
            "htpasswd {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(())
    }

    /// Adds `user` with `password` to `file` with `htpasswd -B` (bcrypt) at `cost`.
    fn add_user(file: &Path, user: &str, password: &str, cost: u32) -> Option<()> {
        let file = file.to_str().unwrap();
        let cost = cost.to_string();
        let create = if Path::new(file).exists() {
            "-b"
        } else {
            "-cb"
        };
        htpasswd(&["-B", "-C", &cost, create, file, user, password])
    }

    /// Pushes the file's mtime forward, so that a rewrite is noticed on file systems with
    /// coarse timestamps (as the token file tests do).
    fn bump_mtime(file: &Path, secs: u64) {
        let handle = fs::File::options().write(true).open(file).unwrap();
        handle
            .set_modified(SystemTime::now() + Duration::from_secs(secs))
            .unwrap();
    }

    fn basic(user_and_password: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_and_password))
    }

    macro_rules! require_htpasswd {
        ($e:expr) => {
            if $e.is_none() {
                eprintln!("htpasswd (apache2-utils) not installed; skipping");
                return;
            }
        };
    }

    #[test]
    fn right_wrong_and_unknown_credentials() {
        let dir = TempDir::new();
        let file = dir.path("users");
        require_htpasswd!(add_user(&file, "alice", "correct horse", 5));
        add_user(&file, "bob", "pass:with:colons", 5).unwrap();
        add_user(&file, "çä", "pässwörd", 5).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        assert!(text.contains("alice:$2y$05$"), "{text}");
        let auth = BasicAuth::open(&file, "wsproxy").unwrap();

        assert_eq!(
            auth.check(Some(&basic("alice:correct horse"))),
            Ok("alice".into())
        );
        assert_eq!(
            auth.check(Some(&basic("bob:pass:with:colons"))),
            Ok("bob".into())
        );
        assert_eq!(auth.check(Some(&basic("çä:pässwörd"))), Ok("çä".into()));

        let wrong = auth.check(Some(&basic("alice:Correct horse"))).unwrap_err();
        assert_eq!(
            wrong,
            AuthFailure::WrongPassword {
                user: "alice".into()
            }
        );
        assert_eq!(wrong.user(), Some("alice"));
        for bad in [
            "alice:",
            "alice:correct horse ",
            "alice:correct",
            "bob:pass",
        ] {
            assert!(
                matches!(
                    auth.check(Some(&basic(bad))),
                    Err(AuthFailure::WrongPassword { .. })
                ),
                "{bad}"
            );
        }
        let unknown = auth
            .check(Some(&basic("mallory:correct horse")))
            .unwrap_err();
        assert_eq!(
            unknown,
            AuthFailure::UnknownUser {
                user: "mallory".into()
            }
        );
        // User names are compared exactly (no case folding, no trimming).
        for other in [
            "Alice:correct horse",
            " alice:correct horse",
            ":correct horse",
        ] {
            assert!(
                matches!(
                    auth.check(Some(&basic(other))),
                    Err(AuthFailure::UnknownUser { .. })
                ),
                "{other}"
            );
        }
        assert_eq!(auth.check(None), Err(AuthFailure::NoCredentials));
        assert_eq!(wrong.http_status(), 401);
    }

    #[test]
    fn every_spelling_of_the_header() {
        let dir = TempDir::new();
        let file = dir.path("users");
        require_htpasswd!(add_user(&file, "alice", "secrets", 4));
        let auth = BasicAuth::open(&file, "wsproxy").unwrap();
        // 13 bytes: the Base64 ends in padding.
        let token = STANDARD.encode("alice:secrets");
        for good in [
            format!("Basic {token}"),
            format!("basic {token}"),
            format!("BASIC {token}"),
            format!("bAsIc {token}"),
            format!("Basic   {token}"),
            format!("Basic {token} "),
        ] {
            assert_eq!(auth.check(Some(&good)), Ok("alice".into()), "{good:?}");
        }
        let unpadded = token.trim_end_matches('=');
        assert_ne!(unpadded, token, "the test needs a padded token");
        for (bad, expected) in [
            (format!("Bearer {token}"), AuthFailure::OtherScheme),
            (format!("Digest {token}"), AuthFailure::OtherScheme),
            (format!("Basic\t{token}"), AuthFailure::OtherScheme),
            (format!("Basic:{token}"), AuthFailure::OtherScheme),
            (token.clone(), AuthFailure::OtherScheme),
            ("".into(), AuthFailure::OtherScheme),
            (
                "Basic".into(),
                AuthFailure::Malformed("nothing after `Basic`"),
            ),
            (
                "Basic    ".into(),
                AuthFailure::Malformed("nothing after `Basic`"),
            ),
            (
                format!("Basic {unpadded}"),
                AuthFailure::Malformed("not Base64"),
            ),
            ("Basic !!!!".into(), AuthFailure::Malformed("not Base64")),
            (
                format!("Basic {token} {token}"),
                AuthFailure::Malformed("not Base64"),
            ),
            (
                format!("Basic {}", STANDARD.encode("alice-secret")),
                AuthFailure::Malformed("no `:` between user and password"),
            ),
            (
                format!("Basic {}", STANDARD.encode(b"alice:\xffsecret")),
                AuthFailure::Malformed("not UTF-8"),
            ),
            (
                format!("Basic {}", STANDARD.encode("alice:sec\nret")),
                AuthFailure::Malformed("control characters"),
            ),
            (
                format!("Basic {}", STANDARD.encode("al\u{7f}ice:secret")),
                AuthFailure::Malformed("control characters"),
            ),
        ] {
            assert_eq!(auth.check(Some(&bad)), Err(expected), "{bad:?}");
        }
    }

    #[test]
    fn failures_never_show_the_password_or_the_user() {
        let dir = TempDir::new();
        let file = dir.path("users");
        require_htpasswd!(add_user(&file, "alice", "hunter2", 4));
        let auth = BasicAuth::open(&file, "wsproxy").unwrap();
        for attempt in ["alice:hunter3", "zed:hunter2", "alice:"] {
            let failure = auth.check(Some(&basic(attempt))).unwrap_err();
            let (user, password) = attempt.split_once(':').unwrap();
            let text = failure.to_string();
            assert!(!text.contains(user), "{text}");
            assert!(password.is_empty() || !text.contains(password), "{text}");
            assert_eq!(failure.user(), Some(user));
        }
    }

    #[test]
    fn the_challenge() {
        let dir = TempDir::new();
        let file = dir.path("users");
        require_htpasswd!(add_user(&file, "alice", "secret", 4));
        let auth = BasicAuth::open(&file, "wsproxy").unwrap();
        assert_eq!(
            auth.challenge(),
            r#"Basic realm="wsproxy", charset="UTF-8""#
        );
        let odd = BasicAuth::open(&file, r#"the "lab" \ proxy"#).unwrap();
        assert_eq!(
            odd.challenge(),
            r#"Basic realm="the \"lab\" \\ proxy", charset="UTF-8""#
        );
        let err = BasicAuth::open(&file, "bad\r\nSet-Cookie: x").unwrap_err();
        assert!(err.contains("control characters"), "{err}");
    }

    /// Other formats, made by the same `htpasswd`, are refused at load with file:line.
    #[test]
    fn other_hash_formats_are_refused_with_file_and_line() {
        let dir = TempDir::new();
        let good = dir.path("good");
        require_htpasswd!(add_user(&good, "alice", "secret", 4));
        let alice = fs::read_to_string(&good).unwrap();
        for (flag, says) in [
            ("-m", "Apache MD5"),
            ("-s", "SHA-1"),
            ("-d", "DES crypt"),
            ("-p", "plain-text"),
        ] {
            let file = dir.path(&format!("users{flag}"));
            fs::write(&file, format!("# users\n\n{alice}")).unwrap();
            let path = file.to_str().unwrap();
            htpasswd(&[flag, "-b", path, "bob", "secret"]).unwrap();
            let err = BasicAuth::open(&file, "wsproxy").unwrap_err();
            assert!(err.contains(&format!("{path}:4:")), "{flag}: {err}");
            assert!(err.contains(says), "{flag}: {err}");
            assert!(err.contains("htpasswd -B"), "{flag}: {err}");
            assert!(!err.contains("secret"), "{flag}: {err}");
        }
    }

    #[test]
    fn the_file_format() {
        let dir = TempDir::new();
        let file = dir.path("users");
        require_htpasswd!(add_user(&file, "alice", "secret", 4));
        let hash_2y = fs::read_to_string(&file).unwrap().trim().to_string();
        let hash_2y = hash_2y.split_once(':').unwrap().1.to_string();
        // $2b$ and $2a$ entries, as other tools write them.
        let made = bcrypt::hash_with_result("other", 4).unwrap();
        let hash_2b = made.format_for_version(bcrypt::Version::TwoB);
        let hash_2a = made.format_for_version(bcrypt::Version::TwoA);
        let hash_2x = made.format_for_version(bcrypt::Version::TwoX);
        // CRLF line ends, comments, blank lines and nginx's comment field are fine.
        fs::write(
            &file,
            format!(
                "# team\r\nalice:{hash_2y}\r\n\r\n   \nbob:{hash_2b}:Bob Example\ncarol:{hash_2a}\n"
            ),
        )
        .unwrap();
        let auth = BasicAuth::open(&file, "wsproxy").unwrap();
        assert_eq!(auth.check(Some(&basic("alice:secret"))), Ok("alice".into()));
        assert_eq!(auth.check(Some(&basic("bob:other"))), Ok("bob".into()));
        assert_eq!(auth.check(Some(&basic("carol:other"))), Ok("carol".into()));

        let path = file.display().to_string();
        for (text, says) in [
            (
                format!("alice {hash_2y}\n"),
                format!("{path}:1: expected `user:hash`"),
            ),
            (
                format!(":{hash_2y}\n"),
                format!("{path}:1: empty user name"),
            ),
            (
                format!("alice:{hash_2y}\nbob:{hash_2b}\nalice:{hash_2a}\n"),
                format!("{path}:3: user \"alice\" is defined again (first on line 1)"),
            ),
            (
                format!("dave:{hash_2x}\n"),
                format!("{path}:1: user \"dave\": a bcrypt $2x$"),
            ),
            (
                format!("erin:{}\n", &hash_2b[..59]),
                format!("{path}:1: user \"erin\": not a valid"),
            ),
            (
                format!("erin:{}\n", hash_2b.replacen("$04$", "$99$", 1)),
                "cost 99".to_string(),
            ),
            (
                "frank:\n".to_string(),
                "the password field is empty".to_string(),
            ),
            (
                "gina:$6$salt$abc\n".to_string(),
                "SHA-512-crypt".to_string(),
            ),
            (
                "# nobody\n\n".to_string(),
                format!("auth file {path}: no users"),
            ),
            (String::new(), "no users".to_string()),
        ] {
            fs::write(&file, &text).unwrap();
            let err = BasicAuth::open(&file, "wsproxy").unwrap_err();
            assert!(err.contains(&says), "{text:?}: {err}");
        }
        let missing = dir.path("missing");
        let err = BasicAuth::open(&missing, "wsproxy").unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_fails_closed() {
        let dir = TempDir::new();
        let file = dir.path("users");
        require_htpasswd!(add_user(&file, "alice", "first", 4));
        let auth = BasicAuth::open(&file, "wsproxy").unwrap();
        assert!(auth.check(Some(&basic("alice:first"))).is_ok());

        // htpasswd changes the password and adds a user in place.
        add_user(&file, "alice", "second", 4).unwrap();
        add_user(&file, "bob", "bobs", 4).unwrap();
        bump_mtime(&file, 5);
        assert!(matches!(
            auth.check(Some(&basic("alice:first"))),
            Err(AuthFailure::WrongPassword { .. })
        ));
        assert!(auth.check(Some(&basic("alice:second"))).is_ok());
        assert!(auth.check(Some(&basic("bob:bobs"))).is_ok());

        // A bad line: every check fails (500), naming the file and line, until it is fixed.
        let good = fs::read_to_string(&file).unwrap();
        fs::write(&file, format!("{good}carol:$apr1$x$y\n")).unwrap();
        bump_mtime(&file, 10);
        let err = auth.check(Some(&basic("alice:second"))).unwrap_err();
        assert!(matches!(err, AuthFailure::Unavailable(_)), "{err}");
        assert!(err.to_string().contains(":3:"), "{err}");
        assert_eq!(err.http_status(), 500);
        assert!(matches!(auth.check(None), Err(AuthFailure::Unavailable(_))));

        // Removed: also unavailable. Restored: works again.
        fs::remove_file(&file).unwrap();
        assert!(matches!(
            auth.check(Some(&basic("alice:second"))),
            Err(AuthFailure::Unavailable(_))
        ));
        fs::write(&file, &good).unwrap();
        bump_mtime(&file, 15);
        assert!(auth.check(Some(&basic("alice:second"))).is_ok());
    }

    /// An unknown user costs a bcrypt verification like a known one. The bound is loose (a
    /// quarter), as the machine may be loaded; without the decoy the unknown user's check
    /// would take microseconds against tens of milliseconds.
    #[test]
    fn unknown_users_cost_a_verification_too() {
        let dir = TempDir::new();
        let file = dir.path("users");
        require_htpasswd!(add_user(&file, "alice", "secret", 8));
        add_user(&file, "bob", "other", 8).unwrap();
        let auth = BasicAuth::open(&file, "wsproxy").unwrap();
        let users = auth.current().unwrap();
        let decoy_cost = users.decoy.parse::<HashParts>().unwrap().get_cost();
        assert_eq!(decoy_cost, 8);

        let fastest = |credentials: &str| {
            (0..3)
                .map(|_| {
                    let started = Instant::now();
                    let _ = auth.check(Some(&basic(credentials)));
                    started.elapsed()
                })
                .min()
                .unwrap()
        };
        let known = fastest("alice:wrong");
        let unknown = fastest("mallory:wrong");
        assert!(
            unknown * 4 > known,
            "unknown {unknown:?} vs known {known:?}"
        );
        assert!(unknown > Duration::from_millis(1), "{unknown:?}");
    }

    #[test]
    fn the_decoy_has_the_most_common_cost() {
        let dir = TempDir::new();
        let file = dir.path("users");
        let hash = |cost| bcrypt::hash("x", cost).unwrap();
        fs::write(
            &file,
            format!("a:{}\nb:{}\nc:{}\n", hash(4), hash(5), hash(5)),
        )
        .unwrap();
        let auth = BasicAuth::open(&file, "wsproxy").unwrap();
        let decoy = &auth.current().unwrap().decoy;
        assert_eq!(decoy.parse::<HashParts>().unwrap().get_cost(), 5);
    }
}
