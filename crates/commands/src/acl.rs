//! ACL: users with passwords, command, key and channel permissions (AUTH user pass,
//! ACL SETUSER ...), checked before each command and again at EXEC, as Redis 7.0's ACLs
//! (without selectors or the ACL file). Refusals go to ACL LOG (`acl_log.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use carmine_keyspace::glob_match;
use carmine_resp::Args;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::dispatch::Ctx;
use crate::table::{cmd, flags::*, CommandSpec, CommandTable, KeySpec};

/// One step of a user's command rules, applied in order: the last that names a command
/// decides.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CommandRule {
    AllowAll,
    DenyAll,
    /// `+@category` / `-@category`.
    Category(String, bool),
    /// `+name` / `-name` (or `+name|sub`).
    Command(String, bool),
}

#[derive(Clone, Debug)]
pub struct UserRules {
    pub enabled: bool,
    pub nopass: bool,
    /// SHA-256 of each password, lowercase hex.
    pub passwords: Vec<String>,
    rules: Vec<CommandRule>,
    pub allkeys: bool,
    pub keys: Vec<Vec<u8>>,
    pub allchannels: bool,
    pub channels: Vec<Vec<u8>>,
}

impl UserRules {
    /// A new user: off, no password, no commands, keys or channels.
    fn empty() -> UserRules {
        UserRules {
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            rules: vec![CommandRule::DenyAll],
            allkeys: false,
            keys: Vec::new(),
            allchannels: false,
            channels: Vec::new(),
        }
    }

    /// The default user: on, no password, everything allowed.
    fn everything() -> UserRules {
        UserRules {
            enabled: true,
            nopass: true,
            passwords: Vec::new(),
            rules: vec![CommandRule::AllowAll],
            allkeys: true,
            keys: Vec::new(),
            allchannels: true,
            channels: Vec::new(),
        }
    }

    fn unrestricted(&self) -> bool {
        self.allkeys && self.allchannels && self.rules.last() == Some(&CommandRule::AllowAll)
    }

    fn allows_command(&self, spec: &CommandSpec, sub: Option<&[u8]>) -> bool {
        let full = sub.map(|s| {
            format!(
                "{}|{}",
                spec.name,
                String::from_utf8_lossy(s).to_ascii_lowercase()
            )
        });
        let mut allowed = false;
        for r in &self.rules {
            match r {
                CommandRule::AllowAll => allowed = true,
                CommandRule::DenyAll => allowed = false,
                CommandRule::Category(c, yes) => {
                    if spec
                        .acl
                        .split_whitespace()
                        .any(|w| w.eq_ignore_ascii_case(c))
                    {
                        allowed = *yes;
                    }
                }
                CommandRule::Command(n, yes) => {
                    if n == spec.name || full.as_deref() == Some(n.as_str()) {
                        allowed = *yes;
                    }
                }
            }
        }
        allowed
    }

    fn allows_key(&self, key: &[u8]) -> bool {
        self.allkeys || self.keys.iter().any(|p| glob_match(p, key))
    }

    fn allows_channel(&self, channel: &[u8], is_pattern: bool) -> bool {
        self.allchannels
            || self.channels.iter().any(|p| {
                if is_pattern {
                    p == channel
                } else {
                    glob_match(p, channel)
                }
            })
    }

    /// Applies one ACL SETUSER rule.
    fn apply(&mut self, op: &[u8], categories: &[String]) -> Result<(), String> {
        let text = String::from_utf8_lossy(op).into_owned();
        let lower = text.to_ascii_lowercase();
        let syntax = || Err("Syntax error".to_string());
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" | "~*" => {
                self.allkeys = true;
                self.keys.clear();
            }
            "resetkeys" => {
                self.allkeys = false;
                self.keys.clear();
            }
            "allchannels" | "&*" => {
                self.allchannels = true;
                self.channels.clear();
            }
            "resetchannels" => {
                self.allchannels = false;
                self.channels.clear();
            }
            "allcommands" | "+@all" => self.rules = vec![CommandRule::AllowAll],
            "nocommands" | "-@all" => self.rules = vec![CommandRule::DenyAll],
            "reset" => *self = UserRules::empty(),
            "sanitize-payload" | "skip-sanitize-payload" => {}
            _ => {
                let (first, rest) = text.split_at(1);
                match first {
                    ">" => {
                        let h = sha256_hex(rest.as_bytes());
                        if !self.passwords.contains(&h) {
                            self.passwords.push(h);
                        }
                        self.nopass = false;
                    }
                    "<" => {
                        let h = sha256_hex(rest.as_bytes());
                        let before = self.passwords.len();
                        self.passwords.retain(|p| *p != h);
                        if before == self.passwords.len() {
                            return Err("no such password".into());
                        }
                    }
                    "#" | "!" => {
                        let h = rest.to_ascii_lowercase();
                        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return Err("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters".into());
                        }
                        if first == "#" {
                            if !self.passwords.contains(&h) {
                                self.passwords.push(h);
                            }
                            self.nopass = false;
                        } else {
                            let before = self.passwords.len();
                            self.passwords.retain(|p| *p != h);
                            if before == self.passwords.len() {
                                return Err("no such password".into());
                            }
                        }
                    }
                    "~" | "%" => {
                        // `%R~`, `%W~`, `%RW~` (read/write key permissions) are kept as
                        // plain key patterns.
                        let pat = match first {
                            "~" => rest,
                            _ => rest.split_once('~').map(|(_, p)| p).ok_or("Syntax error")?,
                        };
                        if self.allkeys {
                            return Err("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns".into());
                        }
                        self.keys.push(pat.as_bytes().to_vec());
                    }
                    "&" => {
                        if self.allchannels {
                            return Err("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels".into());
                        }
                        self.channels.push(rest.as_bytes().to_vec());
                    }
                    "+" | "-" => {
                        let allow = first == "+";
                        let name = rest.to_ascii_lowercase();
                        if let Some(cat) = name.strip_prefix('@') {
                            if !categories.iter().any(|c| c == cat) {
                                return Err("Unknown command or category name in ACL".into());
                            }
                            self.rules
                                .push(CommandRule::Category(format!("@{cat}"), allow));
                        } else {
                            if name.is_empty() {
                                return syntax();
                            }
                            self.rules.push(CommandRule::Command(name, allow));
                        }
                    }
                    _ => return syntax(),
                }
            }
        }
        Ok(())
    }

    /// The rules as ACL LIST / GETUSER show them.
    fn describe_commands(&self) -> String {
        let mut parts = Vec::new();
        for r in &self.rules {
            match r {
                CommandRule::AllowAll => {
                    parts.clear();
                    parts.push("+@all".to_string());
                }
                CommandRule::DenyAll => {
                    parts.clear();
                    parts.push("-@all".to_string());
                }
                CommandRule::Category(c, yes) => {
                    parts.push(format!("{}{c}", if *yes { '+' } else { '-' }))
                }
                CommandRule::Command(n, yes) => {
                    parts.push(format!("{}{n}", if *yes { '+' } else { '-' }))
                }
            }
        }
        parts.join(" ")
    }

    fn describe_keys(&self) -> String {
        if self.allkeys {
            return "~*".into();
        }
        self.keys
            .iter()
            .map(|k| format!("~{}", String::from_utf8_lossy(k)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn describe_channels(&self) -> String {
        if self.allchannels {
            return "&*".into();
        }
        self.channels
            .iter()
            .map(|k| format!("&{}", String::from_utf8_lossy(k)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct AclUser {
    pub name: String,
    rules: RwLock<UserRules>,
    /// Allowed everything: the per-command check is skipped.
    unrestricted: AtomicBool,
}

impl AclUser {
    fn new(name: &str, rules: UserRules) -> AclUser {
        let unrestricted = rules.unrestricted();
        AclUser {
            name: name.to_string(),
            rules: RwLock::new(rules),
            unrestricted: AtomicBool::new(unrestricted),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rules.read().enabled
    }

    fn update(&self, f: impl FnOnce(&mut UserRules) -> Result<(), String>) -> Result<(), String> {
        let mut r = self.rules.write();
        let mut next = r.clone();
        f(&mut next)?;
        self.unrestricted
            .store(next.unrestricted(), Ordering::Relaxed);
        *r = next;
        Ok(())
    }

    /// Why this user may not run the command, if it may not (Redis' NOPERM texts).
    /// Whether the user may touch every key (`allkeys`): SORT's BY and GET need it.
    pub fn all_keys(&self) -> bool {
        self.rules.read().allkeys
    }

    pub fn check(&self, spec: &CommandSpec, args: &Args) -> Result<(), Denial> {
        if self.unrestricted.load(Ordering::Relaxed) {
            return Ok(());
        }
        let r = self.rules.read();
        let sub = if spec.subcommands.is_empty() {
            None
        } else {
            args.get(1)
        };
        if !r.allows_command(spec, sub) {
            let name = match sub {
                Some(s) => format!(
                    "{}|{}",
                    spec.name,
                    String::from_utf8_lossy(s).to_ascii_lowercase()
                ),
                None => spec.name.to_string(),
            };
            return Err(Denial::Command(name));
        }
        if !r.allkeys {
            let mut keys = Vec::new();
            spec.key_indexes(args, &mut keys);
            let denied = keys
                .iter()
                .map(|&i| args.get(i).unwrap_or_default())
                .find(|k| !r.allows_key(k));
            if let Some(key) = denied {
                return Err(Denial::Key(key.to_vec()));
            }
        }
        if !r.allchannels && spec.has(PUBSUB) {
            let (channels, pattern): (&[usize], bool) = match spec.name {
                "publish" | "spublish" => (&[1], false),
                "subscribe" | "ssubscribe" => (&[], false),
                "psubscribe" => (&[], true),
                _ => (&[], false),
            };
            let all: Vec<usize> = if matches!(spec.name, "subscribe" | "ssubscribe" | "psubscribe")
            {
                (1..args.len()).collect()
            } else {
                channels.to_vec()
            };
            let denied = all
                .iter()
                .map(|&i| args.get(i).unwrap_or_default())
                .find(|c| !r.allows_channel(c, pattern));
            if let Some(channel) = denied {
                return Err(Denial::Channel(channel.to_vec()));
            }
        }
        Ok(())
    }

    /// Checks a password (the default user's is `requirepass` until ACL sets one).
    fn password_ok(&self, pass: &[u8]) -> bool {
        let r = self.rules.read();
        if !r.enabled {
            return false;
        }
        if r.nopass {
            return true;
        }
        let h = sha256_hex(pass);
        // Compare every hash fully, so timing does not tell which one came close.
        r.passwords.iter().fold(false, |ok, p| {
            ok | crate::connection::constant_time_eq(p.as_bytes(), h.as_bytes())
        })
    }

    fn describe(&self) -> String {
        let r = self.rules.read();
        let mut parts = vec![
            format!("user {}", self.name),
            if r.enabled { "on" } else { "off" }.to_string(),
        ];
        if r.nopass {
            parts.push("nopass".into());
        }
        parts.push("sanitize-payload".into());
        parts.extend(r.passwords.iter().map(|p| format!("#{p}")));
        let keys = r.describe_keys();
        parts.push(if keys.is_empty() {
            "resetkeys".into()
        } else {
            keys
        });
        let ch = r.describe_channels();
        parts.push(if ch.is_empty() {
            "resetchannels".into()
        } else {
            ch
        });
        parts.push(r.describe_commands());
        parts.join(" ")
    }
}

/// The users.
/// Why [`AclUser::check`] refused a command, and what it named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The command (`name` or `name|sub`).
    Command(String),
    Key(Vec<u8>),
    Channel(Vec<u8>),
}

impl Denial {
    /// The -NOPERM error a client gets.
    pub fn message(&self) -> String {
        match self {
            Denial::Command(name) => {
                format!("NOPERM this user has no permissions to run the '{name}' command")
            }
            Denial::Key(_) => "NOPERM this user has no permissions to access one of the keys used as arguments".into(),
            Denial::Channel(_) => "NOPERM this user has no permissions to access one of the channels used as arguments".into(),
        }
    }

    pub fn reason(&self) -> crate::acl_log::Reason {
        use crate::acl_log::Reason;
        match self {
            Denial::Command(_) => Reason::Command,
            Denial::Key(_) => Reason::Key,
            Denial::Channel(_) => Reason::Channel,
        }
    }

    /// What ACL LOG shows as the entry's object.
    pub fn object(&self) -> &[u8] {
        match self {
            Denial::Command(name) => name.as_bytes(),
            Denial::Key(k) | Denial::Channel(k) => k,
        }
    }
}

pub struct Acl {
    /// ACL LOG.
    pub log: crate::acl_log::AclLog,
    users: RwLock<BTreeMap<String, Arc<AclUser>>>,
    default: Arc<AclUser>,
    /// The default user got its password from ACL (not `requirepass`).
    default_acl_password: AtomicBool,
}

impl Default for Acl {
    fn default() -> Self {
        let default = Arc::new(AclUser::new("default", UserRules::everything()));
        let mut users = BTreeMap::new();
        users.insert("default".to_string(), default.clone());
        Acl {
            log: crate::acl_log::AclLog::default(),
            users: RwLock::new(users),
            default,
            default_acl_password: AtomicBool::new(false),
        }
    }
}

impl Acl {
    pub fn default_user(&self) -> &Arc<AclUser> {
        &self.default
    }

    pub fn user(&self, name: &[u8]) -> Option<Arc<AclUser>> {
        let name = std::str::from_utf8(name).ok()?;
        self.users.read().get(name).cloned()
    }

    /// Whether a new connection must authenticate: the default user is off, or has a
    /// password (its own, or `requirepass`).
    pub fn auth_required(&self, requirepass_set: bool) -> bool {
        let r = self.default.rules.read();
        !r.enabled
            || if self.default_acl_password.load(Ordering::Relaxed) {
                !r.nopass
            } else {
                requirepass_set
            }
    }

    /// The user if the password is right and the user is on.
    pub fn authenticate(
        &self,
        name: &[u8],
        pass: &[u8],
        requirepass: Option<&[u8]>,
    ) -> Option<Arc<AclUser>> {
        let user = self.user(name)?;
        let ok = if Arc::ptr_eq(&user, &self.default)
            && !self.default_acl_password.load(Ordering::Relaxed)
        {
            user.enabled()
                && requirepass.is_none_or(|p| crate::connection::constant_time_eq(p, pass))
        } else {
            user.password_ok(pass)
        };
        ok.then_some(user)
    }
}

pub fn commands() -> Vec<CommandSpec> {
    vec![CommandSpec {
        subcommands: &[
            "cat", "deluser", "dryrun", "genpass", "getuser", "help", "list", "load", "log",
            "save", "setuser", "users", "whoami",
        ],
        ..cmd(
            "acl",
            -2,
            ADMIN | NOSCRIPT | LOADING | STALE,
            KeySpec::None,
            acl,
            "server",
            "@admin @slow @dangerous",
            "A container for Access List Control commands.",
        )
    }]
}

/// The categories the command table names (without `@`).
fn categories(table: &CommandTable) -> Vec<String> {
    let mut out: Vec<String> = table
        .all()
        .iter()
        .flat_map(|s| s.acl.split_whitespace())
        .filter_map(|w| w.strip_prefix('@'))
        .map(str::to_string)
        .collect();
    out.push("all".into());
    out.sort();
    out.dedup();
    out
}

const HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]",
    "    Delete a list of users.",
    "DRYRUN <username> <command> [<arg> ...]",
    "    Returns whether the user can execute the given command without executing the command.",
    "GETUSER <username>",
    "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST",
    "    Show users details in config file format.",
    "LOAD",
    "    Reload users from the ACL file.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries.",
    "SAVE",
    "    Save the current config to the ACL file.",
    "SETUSER <username> <attribute> [<attribute> ...]",
    "    Create or modify a user with the specified attributes.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Print this help.",
];

fn acl(ctx: &mut Ctx<'_, '_>) {
    let sub = String::from_utf8_lossy(ctx.arg(1)).to_ascii_lowercase();
    let argc = ctx.args.len();
    let acl = &ctx.shared.acl;
    match (sub.as_str(), argc) {
        ("help", 2) => {
            ctx.reply.array(HELP.len());
            for l in HELP {
                ctx.reply.simple(l);
            }
        }
        ("whoami", 2) => {
            let name = ctx.session.user_name();
            ctx.reply.bulk(name.as_bytes());
        }
        ("users", 2) => {
            let users = acl.users.read();
            ctx.reply.array(users.len());
            for name in users.keys() {
                ctx.reply.bulk(name.as_bytes());
            }
        }
        ("list", 2) => {
            let users: Vec<Arc<AclUser>> = acl.users.read().values().cloned().collect();
            ctx.reply.array(users.len());
            for u in users {
                ctx.reply.bulk(u.describe().as_bytes());
            }
        }
        ("getuser", 3) => {
            let Some(u) = acl.user(ctx.arg(2)) else {
                return ctx.reply.null();
            };
            let r = u.rules.read().clone();
            let mut flags = vec![if r.enabled { "on" } else { "off" }];
            if r.nopass {
                flags.push("nopass");
            }
            flags.push("sanitize-payload");
            let out = &mut *ctx.reply;
            out.map(6);
            out.bulk(b"flags");
            out.array(flags.len());
            for f in flags {
                out.bulk(f.as_bytes());
            }
            out.bulk(b"passwords");
            out.array(r.passwords.len());
            for p in &r.passwords {
                out.bulk(p.as_bytes());
            }
            out.bulk(b"commands");
            out.bulk(r.describe_commands().as_bytes());
            out.bulk(b"keys");
            out.bulk(r.describe_keys().as_bytes());
            out.bulk(b"channels");
            out.bulk(r.describe_channels().as_bytes());
            out.bulk(b"selectors");
            out.array(0);
        }
        ("setuser", n) if n >= 3 => setuser(ctx),
        ("deluser", n) if n >= 3 => {
            let mut deleted = 0;
            for i in 2..argc {
                let name = String::from_utf8_lossy(ctx.arg(i)).into_owned();
                if name == "default" {
                    return ctx.error("ERR The 'default' user cannot be removed");
                }
                if acl.users.write().remove(&name).is_some() {
                    deleted += 1;
                    kill_clients_of(ctx, &name);
                }
            }
            ctx.reply.int(deleted);
        }
        ("cat", 2) => {
            let cats = categories(&ctx.shared.commands);
            let cats: Vec<&String> = cats.iter().filter(|c| *c != "all").collect();
            ctx.reply.array(cats.len());
            for c in cats {
                ctx.reply.bulk(c.as_bytes());
            }
        }
        ("cat", 3) => {
            let want = format!(
                "@{}",
                String::from_utf8_lossy(ctx.arg(2)).to_ascii_lowercase()
            );
            if !categories(&ctx.shared.commands)
                .iter()
                .any(|c| format!("@{c}") == want)
            {
                return ctx.error(&format!(
                    "ERR Unknown category '{}'",
                    String::from_utf8_lossy(ctx.arg(2))
                ));
            }
            let names: Vec<&str> = ctx
                .shared
                .commands
                .all()
                .iter()
                .filter(|s| s.acl.split_whitespace().any(|w| w == want))
                .map(|s| s.name)
                .collect();
            ctx.reply.array(names.len());
            for n in names {
                ctx.reply.bulk(n.as_bytes());
            }
        }
        ("genpass", 2 | 3) => {
            let bits = if argc == 3 {
                match carmine_resp::parse_i64(ctx.arg(2)) {
                    Some(b) if (1..=4096).contains(&b) => b as usize,
                    _ => return ctx.error("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096"),
                }
            } else {
                256
            };
            let chars = bits.div_ceil(4);
            ctx.reply.bulk(crate::state::random_hex(chars).as_bytes());
        }
        ("log", 2 | 3) => {
            if argc == 3 && ctx.is(2, "RESET") {
                acl.log.reset();
                return ctx.reply.ok();
            }
            let count = match argc {
                3 => match carmine_resp::parse_i64(ctx.arg(2)) {
                    Some(n) => n.max(0) as usize,
                    None => return ctx.error("ERR value is not an integer or out of range"),
                },
                _ => 10,
            };
            acl.log.reply(count, carmine_keyspace::now_ms(), ctx.reply);
        }
        ("load" | "save", 2) => {
            let path = ctx.shared.config.get("aclfile").unwrap_or_default();
            if path.is_empty() {
                return ctx.error(
                    "ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.",
                );
            }
            if sub == "save" {
                return match save_file(ctx.shared, &path) {
                    Ok(()) => ctx.reply.ok(),
                    Err(e) => ctx.error(&format!("ERR {e}")),
                };
            }
            match load_file(ctx.shared, &path) {
                Ok(replaced) => {
                    // Their connections held the old users: closed, as Redis closes them.
                    for name in replaced {
                        kill_clients_of(ctx, &name);
                    }
                    ctx.reply.ok()
                }
                Err(e) => ctx.error(&format!("ERR {e}")),
            }
        }
        ("dryrun", n) if n >= 4 => {
            let Some(u) = acl.user(ctx.arg(2)) else {
                return ctx.error(&format!(
                    "ERR User '{}' not found",
                    String::from_utf8_lossy(ctx.arg(2))
                ));
            };
            let parts: Vec<&[u8]> = (3..argc).map(|i| ctx.arg(i)).collect();
            let args = Args::from_slices(&parts);
            let Some(idx) = ctx.shared.commands.lookup(ctx.arg(3)) else {
                return ctx.error(&format!(
                    "ERR Command '{}' not found",
                    String::from_utf8_lossy(ctx.arg(3))
                ));
            };
            let Some(spec) = ctx.shared.commands.get(idx) else {
                return ctx.error("ERR Command not found");
            };
            match u.check(spec, &args) {
                Ok(()) => ctx.reply.ok(),
                Err(e) => {
                    let e = e.message();
                    let why = e.strip_prefix("NOPERM ").unwrap_or(&e).to_string();
                    ctx.reply.bulk(why.as_bytes());
                }
            }
        }
        _ => ctx.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
            crate::dispatch::printable(ctx.arg(1), 128)
        )),
    }
}

fn setuser(ctx: &mut Ctx<'_, '_>) {
    let name = String::from_utf8_lossy(ctx.arg(2)).into_owned();
    if name.contains(' ') || name.is_empty() {
        return ctx.error("ERR Usernames can't contain spaces or null characters");
    }
    let cats = categories(&ctx.shared.commands);
    let ops: Vec<Vec<u8>> = (3..ctx.args.len()).map(|i| ctx.arg(i).to_vec()).collect();
    let acl = &ctx.shared.acl;
    let existing = acl.user(name.as_bytes());
    let user = existing
        .clone()
        .unwrap_or_else(|| Arc::new(AclUser::new(&name, UserRules::empty())));
    let mut failed = None;
    let result = user.update(|r| {
        for op in &ops {
            if let Err(e) = r.apply(op, &cats) {
                failed = Some(String::from_utf8_lossy(op).into_owned());
                return Err(e);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        return ctx.error(&format!(
            "ERR Error in ACL SETUSER modifier '{}': {e}",
            failed.unwrap_or_default()
        ));
    }
    if Arc::ptr_eq(&user, &acl.default)
        && ops.iter().any(|o| {
            let o = o.to_ascii_lowercase();
            o == b"nopass"
                || o == b"resetpass"
                || o == b"reset"
                || matches!(o.first(), Some(b'>' | b'<' | b'#' | b'!'))
        })
    {
        acl.default_acl_password.store(true, Ordering::Relaxed);
    }
    if existing.is_none() {
        acl.users.write().insert(name, user);
    }
    ctx.reply.ok();
}

/// Users from `user` lines (redis.conf, or an ACL file's), replacing every user but
/// keeping the default user's object (connections hold it): all lines are checked
/// first, so a bad one changes nothing. Without a default user among them, the default
/// user allows everything, as in Redis. Returns the names of the users replaced.
fn replace_users(
    shared: &crate::Shared,
    lines: &[(usize, Vec<String>)],
    source: &str,
) -> Result<Vec<String>, String> {
    let cats = categories(&shared.commands);
    let mut parsed: BTreeMap<String, UserRules> = BTreeMap::new();
    let mut errors = String::new();
    for (line, words) in lines {
        let mut words = words.iter();
        let name = match (words.next().map(String::as_str), words.next()) {
            (Some("user"), Some(name)) => name,
            _ => {
                errors.push_str(&format!(
                    "{source}:{line}: should start with user keyword. "
                ));
                continue;
            }
        };
        if parsed.contains_key(name.as_str()) {
            errors.push_str(&format!("{source}:{line}: Duplicate user '{name}' found. "));
            continue;
        }
        let mut rules = UserRules::empty();
        for op in words {
            if let Err(e) = rules.apply(op.as_bytes(), &cats) {
                errors.push_str(&format!(
                    "{source}:{line}: Error in applying operation '{op}': {e}. "
                ));
                break;
            }
        }
        parsed.insert(name.clone(), rules);
    }
    if !errors.is_empty() {
        return Err(errors.trim_end().to_string());
    }
    let acl = &shared.acl;
    let default_rules = parsed
        .remove("default")
        .unwrap_or_else(UserRules::everything);
    let _ = acl.default.update(|r| {
        *r = default_rules;
        Ok(())
    });
    acl.default_acl_password.store(true, Ordering::Relaxed);
    let mut users = acl.users.write();
    let replaced: Vec<String> = users.keys().filter(|n| *n != "default").cloned().collect();
    users.retain(|n, _| n == "default");
    for (name, rules) in parsed {
        let user = Arc::new(AclUser::new(&name, rules));
        users.insert(name, user);
    }
    Ok(replaced)
}

/// At start-up: the users of redis.conf's `user` lines, or of `aclfile` (not both, as
/// Redis refuses that too).
pub fn load_at_startup(shared: &crate::Shared) -> Result<(), String> {
    let lines = shared.config.user_lines.lock().clone();
    let file = shared.config.get("aclfile").unwrap_or_default();
    if !lines.is_empty() && !file.is_empty() {
        return Err("Configuring Redis with users defined in redis.conf and at the same setting an ACL file path is invalid. This setup is very likely to lead to configuration errors and security holes, please define either an ACL file or declare users directly in your redis.conf, but not both.".into());
    }
    if !lines.is_empty() {
        // The directive itself is the `user` keyword an ACL file's lines start with.
        let lines: Vec<(usize, Vec<String>)> = lines
            .into_iter()
            .map(|(n, words)| {
                (
                    n,
                    std::iter::once("user".to_string()).chain(words).collect(),
                )
            })
            .collect();
        replace_users(shared, &lines, "redis.conf")?;
    }
    if !file.is_empty() {
        load_file(shared, &file)?;
    }
    Ok(())
}

/// Reads the ACL file `path` (one `user <name> <rules...>` per line, blank lines
/// skipped) and puts its users in place. Returns the names of the users replaced.
fn load_file(shared: &crate::Shared, path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("Error loading ACLs, opening file '{path}': {e}"))?;
    let lines: Vec<(usize, Vec<String>)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.split_whitespace().map(str::to_string).collect()))
        .collect();
    replace_users(shared, &lines, path)
}

/// ACL SAVE: every user as ACL LIST shows it, one per line, written to a temporary file
/// that then replaces `path`.
fn save_file(shared: &crate::Shared, path: &str) -> Result<(), String> {
    let users: Vec<Arc<AclUser>> = shared.acl.users.read().values().cloned().collect();
    let mut text = String::new();
    for u in users {
        text.push_str(&u.describe());
        text.push('\n');
    }
    let tmp = format!("{path}.tmp-{}", std::process::id());
    let written = std::fs::write(&tmp, text.as_bytes())
        .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("There was an error trying to save the ACLs. Please check the server logs for more information ({e})"));
    }
    Ok(())
}

/// Redis disconnects the clients of a deleted user.
fn kill_clients_of(ctx: &mut Ctx<'_, '_>, name: &str) {
    let me = ctx.session.id();
    for c in ctx.shared.clients.snapshot() {
        if *c.user.lock() == name {
            if c.id == me {
                ctx.session.close_after_reply = true;
            } else {
                c.kill();
            }
        }
    }
}
