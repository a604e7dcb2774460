//! ACL: users with passwords and selectors (command, key and channel permissions), as
//! Redis 7.0's ACLs: `AUTH user pass`, `ACL SETUSER ...`, `user` lines and the ACL file,
//! checked before each command and again at EXEC. A user's root selector is what its
//! rules outside parentheses set; each `( ... )` adds another selector, and a command
//! runs when any one selector allows all of it. Refusals go to ACL LOG (`acl_log.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use carmine_keyspace::glob_match;
use carmine_resp::Args;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::dispatch::Ctx;
use crate::key_flags::{acl_permissions_needed, flags_of_key, ACL_ALL, ACL_READ, ACL_WRITE};
use crate::table::{cmd, flags::*, CommandSpec, CommandTable, KeySpec};

/// What rules may name: the command table's categories and commands.
struct RuleNames<'a> {
    categories: Vec<String>,
    table: &'a CommandTable,
}

impl<'a> RuleNames<'a> {
    fn new(table: &'a CommandTable) -> RuleNames<'a> {
        RuleNames {
            categories: categories(table),
            table,
        }
    }

    fn spec(&self, name: &str) -> Option<&'a CommandSpec> {
        self.table
            .lookup(name.as_bytes())
            .and_then(|i| self.table.get(i))
    }

    /// Checks `+name`, `-name`, `+name|sub`, `+name|first-arg` as Redis does: the
    /// command must exist, a container's subcommand too; a first argument may only be
    /// allowed, and only of a command without subcommands.
    fn check_command_rule(&self, name: &str, allow: bool) -> Result<(), String> {
        let unknown = || Err("Unknown command or category name in ACL".to_string());
        let Some((command, arg)) = name.rsplit_once('|') else {
            return match self.spec(name) {
                Some(_) => Ok(()),
                None => unknown(),
            };
        };
        if let Some((parent, sub)) = command.split_once('|') {
            // `+config|get|x`: a first argument of a subcommand.
            let is_subcommand = self
                .spec(parent)
                .is_some_and(|s| s.subcommands.contains(&sub));
            return if allow && is_subcommand {
                Err("Allowing first-arg of a subcommand is not supported".into())
            } else {
                unknown()
            };
        }
        let Some(spec) = self.spec(command) else {
            return unknown();
        };
        if spec.subcommands.contains(&arg) {
            return Ok(());
        }
        if !allow || !spec.subcommands.is_empty() {
            return unknown();
        }
        if arg.is_empty() {
            return Err("Syntax error".into());
        }
        Ok(())
    }
}

/// One step of a selector's command rules, applied in order: the last that names a
/// command decides.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CommandRule {
    AllowAll,
    DenyAll,
    /// `+@category` / `-@category`, with its bit of [`crate::table::ACL_CATEGORIES`]
    /// (0 for a category outside them: then the name is compared).
    Category(String, u32, bool),
    /// `+name` / `-name` (or `+name|sub`, or `+name|first-arg` for a command without
    /// subcommands).
    Command(String, bool),
}

/// A key pattern and what it grants (`ACL_READ` for `%R~`, `ACL_WRITE` for `%W~`, both
/// for `~` and `%RW~`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyPattern {
    pattern: Vec<u8>,
    permissions: u8,
}

/// What a selector grants: commands, keys and channels.
#[derive(Clone, Debug)]
struct Selector {
    rules: Vec<CommandRule>,
    allkeys: bool,
    keys: Vec<KeyPattern>,
    allchannels: bool,
    channels: Vec<Vec<u8>>,
}

/// Where a selector's check stopped: Redis ranks command < key < channel refusals and,
/// among several selectors, reports the most specific one (the later argument on a tie).
#[derive(Clone, Debug)]
struct Refusal {
    denial: Denial,
    rank: u8,
    position: usize,
}

impl Selector {
    /// A selector that allows nothing (channels per `acl-pubsub-default`).
    fn empty(all_channels: bool) -> Selector {
        Selector {
            rules: vec![CommandRule::DenyAll],
            allkeys: false,
            keys: Vec::new(),
            allchannels: all_channels,
            channels: Vec::new(),
        }
    }

    fn everything() -> Selector {
        Selector {
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

    fn allows_command(&self, spec: &CommandSpec, args: &Args) -> bool {
        self.allows(spec, args.get(1))
    }

    /// Whether the rules allow `spec` called with `first` as its first argument.
    fn allows(&self, spec: &CommandSpec, first: Option<&[u8]>) -> bool {
        // `name|first` without building it: this runs before every command of a
        // restricted user.
        let names_first = |rule: &str| {
            let (rule, name) = (rule.as_bytes(), spec.name.as_bytes());
            first.is_some_and(|f| {
                rule.len() == name.len() + 1 + f.len()
                    && rule.starts_with(name)
                    && rule[name.len()] == b'|'
                    && rule[name.len() + 1..].eq_ignore_ascii_case(f)
            })
        };
        let mut allowed = false;
        for r in &self.rules {
            match r {
                CommandRule::AllowAll => allowed = true,
                CommandRule::DenyAll => allowed = false,
                CommandRule::Category(c, bit, yes) => {
                    let member = if *bit != 0 {
                        spec.acl_bits & bit != 0
                    } else {
                        spec.acl.split_whitespace().any(|w| w == c)
                    };
                    if member {
                        allowed = *yes;
                    }
                }
                CommandRule::Command(n, yes) => {
                    if n == spec.name {
                        allowed = *yes;
                    } else if names_first(n) {
                        // A subcommand, or the first argument Redis lets `+select|0`
                        // allow (only ever additive for a command without subcommands).
                        if *yes || !spec.subcommands.is_empty() {
                            allowed = *yes;
                        }
                    }
                }
            }
        }
        allowed
    }

    /// Whether a pattern granting `need` matches `key`.
    fn allows_key(&self, key: &[u8], need: u8) -> bool {
        self.allkeys
            || self
                .keys
                .iter()
                .any(|p| p.permissions & need == need && glob_match(&p.pattern, key))
    }

    /// Whether the selector may read (or write, per `need`) every key: `allkeys`, or a
    /// `*` pattern with those permissions.
    fn allows_every_key(&self, need: u8) -> bool {
        self.allkeys
            || self
                .keys
                .iter()
                .any(|p| p.permissions & need == need && p.pattern == b"*")
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

    /// Whether this selector allows the command with these arguments, and if not, why.
    fn check(&self, spec: &CommandSpec, args: &Args, keys: &[usize]) -> Result<(), Refusal> {
        if !spec.has(NO_AUTH) && !self.allows_command(spec, args) {
            return Err(Refusal {
                denial: Denial::Command(denied_command_name(spec, args)),
                rank: 1,
                position: 0,
            });
        }
        if !self.allkeys {
            // The flags matter only to a pattern that grants less than everything.
            let flags_matter = self.keys.iter().any(|p| p.permissions != ACL_ALL);
            for (n, &i) in keys.iter().enumerate() {
                let key = args.get(i).unwrap_or_default();
                let need = if flags_matter {
                    acl_permissions_needed(flags_of_key(spec.name, args, n))
                } else {
                    0
                };
                if !self.allows_key(key, need) {
                    return Err(Refusal {
                        denial: Denial::Key(key.to_vec()),
                        rank: 2,
                        position: i,
                    });
                }
            }
        }
        if !self.allchannels && spec.has(PUBSUB) {
            // The channel arguments Redis checks: PUBLISH's one, every SUBSCRIBE's.
            let (positions, pattern) = match spec.name {
                "publish" | "spublish" => (1..2.min(args.len()), false),
                "subscribe" | "ssubscribe" => (1..args.len(), false),
                "psubscribe" => (1..args.len(), true),
                _ => (0..0, false),
            };
            for i in positions {
                let channel = args.get(i).unwrap_or_default();
                if !self.allows_channel(channel, pattern) {
                    return Err(Refusal {
                        denial: Denial::Channel(channel.to_vec()),
                        rank: 4,
                        position: i,
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies one rule that selectors take (commands, keys, channels).
    fn apply(&mut self, text: &str, names: &RuleNames<'_>) -> Result<(), String> {
        let lower = text.to_ascii_lowercase();
        let syntax = || Err("Syntax error".to_string());
        match lower.as_str() {
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
            _ => {
                let Some(first) = text.chars().next() else {
                    return syntax();
                };
                let rest = &text[first.len_utf8()..];
                match first {
                    '~' | '%' => {
                        if self.allkeys {
                            return Err("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns".into());
                        }
                        let (permissions, pattern) = if first == '~' {
                            (ACL_ALL, rest)
                        } else {
                            parse_key_permissions(rest).ok_or("Syntax error")?
                        };
                        if pattern.contains(' ') {
                            return syntax();
                        }
                        let pattern = pattern.as_bytes();
                        match self.keys.iter_mut().find(|p| p.pattern == pattern) {
                            Some(p) => p.permissions |= permissions,
                            None => self.keys.push(KeyPattern {
                                pattern: pattern.to_vec(),
                                permissions,
                            }),
                        }
                    }
                    '&' => {
                        if self.allchannels {
                            return Err("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels".into());
                        }
                        if rest.contains(' ') {
                            return syntax();
                        }
                        if !self.channels.iter().any(|c| c == rest.as_bytes()) {
                            self.channels.push(rest.as_bytes().to_vec());
                        }
                    }
                    '+' | '-' => {
                        let allow = first == '+';
                        let name = rest.to_ascii_lowercase();
                        if let Some(cat) = name.strip_prefix('@') {
                            if !names.categories.iter().any(|c| c == cat) {
                                return Err("Unknown command or category name in ACL".into());
                            }
                            let name = format!("@{cat}");
                            let bit = crate::table::acl_category_bit(&name);
                            self.rules.push(CommandRule::Category(name, bit, allow));
                        } else {
                            names.check_command_rule(&name, allow)?;
                            self.add_command_rule(names, name, allow);
                        }
                    }
                    _ => return syntax(),
                }
            }
        }
        Ok(())
    }

    /// Adds `+name` / `-name` so that the rules read as Redis describes its command
    /// bitmap: an earlier rule for the same command (or, for a whole command, for its
    /// subcommands) is dropped, and a rule that changes nothing is not kept.
    fn add_command_rule(&mut self, names: &RuleNames<'_>, name: String, allow: bool) {
        let sub_prefix = format!("{name}|");
        let whole = !name.contains('|');
        self.rules.retain(|r| match r {
            CommandRule::Command(n, _) => *n != name && !(whole && n.starts_with(&sub_prefix)),
            _ => true,
        });
        let (command, first) = match name.split_once('|') {
            Some((c, a)) => (c, Some(a.as_bytes())),
            None => (name.as_str(), None),
        };
        let unchanged = names
            .spec(command)
            .is_some_and(|spec| self.allows(spec, first) == allow);
        if !unchanged {
            self.rules.push(CommandRule::Command(name, allow));
        }
    }

    /// The command rules as ACL LIST / GETUSER show them.
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
                CommandRule::Category(c, _, yes) => {
                    parts.push(format!("{}{c}", if *yes { '+' } else { '-' }))
                }
                CommandRule::Command(n, yes) => {
                    parts.push(format!("{}{n}", if *yes { '+' } else { '-' }))
                }
            }
        }
        parts.join(" ")
    }

    /// The key patterns as GETUSER shows them (`~*` for allkeys).
    fn describe_keys(&self) -> String {
        if self.allkeys {
            return "~*".into();
        }
        self.keys
            .iter()
            .map(|k| {
                let prefix = match k.permissions {
                    ACL_READ => "%R~",
                    ACL_WRITE => "%W~",
                    _ => "~",
                };
                format!("{prefix}{}", String::from_utf8_lossy(&k.pattern))
            })
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

    /// The selector as ACL LIST writes it: keys (none when empty), channels
    /// (`resetchannels` first unless all), commands.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        let keys = self.describe_keys();
        if !keys.is_empty() {
            parts.push(keys);
        }
        if self.allchannels {
            parts.push("&*".into());
        } else {
            parts.push("resetchannels".into());
            let ch = self.describe_channels();
            if !ch.is_empty() {
                parts.push(ch);
            }
        }
        parts.push(self.describe_commands());
        parts.join(" ")
    }
}

/// `%R~pat`, `%W~pat`, `%RW~pat` (each letter at most once): the permissions and the
/// pattern; `rest` is what follows the `%`.
fn parse_key_permissions(rest: &str) -> Option<(u8, &str)> {
    let mut permissions = 0;
    for (i, c) in rest.char_indices() {
        match c.to_ascii_uppercase() {
            'R' if permissions & ACL_READ == 0 => permissions |= ACL_READ,
            'W' if permissions & ACL_WRITE == 0 => permissions |= ACL_WRITE,
            '~' if permissions != 0 => return Some((permissions, &rest[i + 1..])),
            _ => return None,
        }
    }
    None
}

/// `name`, or `name|sub` for a container command, as NOPERM errors name it.
fn denied_command_name(spec: &CommandSpec, args: &Args) -> String {
    match args.get(1).filter(|_| !spec.subcommands.is_empty()) {
        Some(s) => format!(
            "{}|{}",
            spec.name,
            String::from_utf8_lossy(s).to_ascii_lowercase()
        ),
        None => spec.name.to_string(),
    }
}

/// The key arguments the ACL checks: the key specs' keys, or a script's declared keys
/// (EVAL and FCALL lock none of their own, but Redis checks their `numkeys` keys; a
/// `numkeys` that does not fit the arguments names no keys).
fn acl_key_indexes(spec: &CommandSpec, args: &Args) -> Vec<usize> {
    let mut keys = Vec::new();
    acl_key_indexes_into(spec, args, &mut keys);
    keys
}

fn acl_key_indexes_into(spec: &CommandSpec, args: &Args, keys: &mut Vec<usize>) {
    if crate::scripting::runs_script(spec) {
        let numkeys = args
            .get(2)
            .and_then(carmine_resp::parse_i64)
            .filter(|&n| n >= 0 && (n as usize) <= args.len().saturating_sub(3));
        if let Some(n) = numkeys {
            keys.extend(3..3 + n as usize);
        }
    } else {
        spec.key_indexes(args, keys);
    }
}

thread_local! {
    /// The key positions of the command being checked: reused, as the check runs
    /// before every command of a restricted user.
    static KEY_INDEXES: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Clone, Debug)]
pub struct UserRules {
    pub enabled: bool,
    pub nopass: bool,
    /// SHA-256 of each password, lowercase hex.
    pub passwords: Vec<String>,
    /// `sanitize-payload` (Some(true)) or `skip-sanitize-payload` (Some(false)) once
    /// set; a new user has neither.
    sanitize_payload: Option<bool>,
    /// The rules given outside parentheses.
    root: Selector,
    /// One per `( ... )` rule, in the order they were added.
    selectors: Vec<Selector>,
    /// `acl-pubsub-default` when the user was made: the channels of new selectors and
    /// of `reset`.
    all_channels_by_default: bool,
}

impl UserRules {
    /// A new user: off, no password, no commands or keys; channels per
    /// `acl-pubsub-default`.
    fn empty(all_channels_by_default: bool) -> UserRules {
        UserRules {
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            sanitize_payload: None,
            root: Selector::empty(all_channels_by_default),
            selectors: Vec::new(),
            all_channels_by_default,
        }
    }

    /// The default user: on, no password, everything allowed.
    fn everything() -> UserRules {
        UserRules {
            enabled: true,
            nopass: true,
            passwords: Vec::new(),
            sanitize_payload: None,
            root: Selector::everything(),
            selectors: Vec::new(),
            all_channels_by_default: false,
        }
    }

    fn unrestricted(&self) -> bool {
        self.root.unrestricted()
    }

    /// The flags ACL LIST and GETUSER show, in Redis' order.
    fn flags(&self) -> Vec<&'static str> {
        let mut flags = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            flags.push("nopass");
        }
        match self.sanitize_payload {
            Some(false) => flags.push("skip-sanitize-payload"),
            Some(true) => flags.push("sanitize-payload"),
            None => {}
        }
        flags
    }

    /// Whether some selector lets the user subscribe to `channel` (a pattern as
    /// PSUBSCRIBE gives it when `is_pattern`).
    fn allows_channel(&self, channel: &[u8], is_pattern: bool) -> bool {
        self.all_selectors()
            .any(|s| s.allows_channel(channel, is_pattern))
    }

    fn all_selectors(&self) -> impl Iterator<Item = &Selector> {
        std::iter::once(&self.root).chain(&self.selectors)
    }

    /// Applies one ACL SETUSER rule (a `( ... )` selector already merged into one).
    fn apply(&mut self, op: &[u8], names: &RuleNames<'_>) -> Result<(), String> {
        let text = String::from_utf8_lossy(op).into_owned();
        let lower = text.to_ascii_lowercase();
        match lower.as_str() {
            "" => {}
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
            "clearselectors" => self.selectors.clear(),
            "reset" => {
                *self = UserRules::empty(self.all_channels_by_default);
                self.sanitize_payload = Some(true);
            }
            "sanitize-payload" => self.sanitize_payload = Some(true),
            "skip-sanitize-payload" => self.sanitize_payload = Some(false),
            _ if text.starts_with('(') && text.ends_with(')') && text.len() >= 2 => {
                let mut selector = Selector::empty(self.all_channels_by_default);
                for word in text[1..text.len() - 1].split_whitespace() {
                    selector.apply(word, names)?;
                }
                self.selectors.push(selector);
            }
            _ => match op.first() {
                Some(b'>') => {
                    let h = sha256_hex(&op[1..]);
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                }
                Some(b'<') => self.remove_password(&sha256_hex(&op[1..]))?,
                Some(&first @ (b'#' | b'!')) => {
                    let hash = &op[1..];
                    if hash.len() != 64
                        || !hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    {
                        return Err("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters".into());
                    }
                    let hash = String::from_utf8_lossy(hash).into_owned();
                    if first == b'#' {
                        if !self.passwords.contains(&hash) {
                            self.passwords.push(hash);
                        }
                        self.nopass = false;
                    } else {
                        self.remove_password(&hash)?;
                    }
                }
                _ => self.root.apply(&text, names)?,
            },
        }
        Ok(())
    }

    fn remove_password(&mut self, hash: &str) -> Result<(), String> {
        let before = self.passwords.len();
        self.passwords.retain(|p| p != hash);
        if before == self.passwords.len() {
            return Err(
                "The password you are trying to remove from the user does not exist".into(),
            );
        }
        Ok(())
    }
}

/// Joins the words of a `( ... )` selector that spaces split into several arguments
/// (`"(~key1" "+get)"`), as Redis does for ACL SETUSER, `user` lines and the ACL file.
/// Err names the word an unclosed parenthesis starts at.
fn merge_selector_arguments<T: AsRef<[u8]>>(ops: &[T]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Vec<u8>)> = None;
    for (i, op) in ops.iter().enumerate() {
        let op = op.as_ref();
        if let Some((_, joined)) = open.as_mut() {
            joined.push(b' ');
            joined.extend_from_slice(op);
            if op.last() == Some(&b')') {
                if let Some((_, joined)) = open.take() {
                    out.push(joined);
                }
            }
            continue;
        }
        if op.first() == Some(&b'(') && op.last() != Some(&b')') {
            open = Some((i, op.to_vec()));
            continue;
        }
        out.push(op.to_vec());
    }
    match open {
        Some((i, _)) => Err(format!(
            "Unmatched parenthesis in acl selector starting at '{}'.",
            String::from_utf8_lossy(ops[i].as_ref())
        )),
        None => Ok(out),
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

    /// SORT's BY and GET read keys no argument names: Redis allows them when one selector
    /// allows the command and may read every key.
    pub fn may_read_every_key(&self, spec: &CommandSpec, args: &Args) -> bool {
        if self.unrestricted.load(Ordering::Relaxed) {
            return true;
        }
        let r = self.rules.read();
        let keys = acl_key_indexes(spec, args);
        let allowed = r
            .all_selectors()
            .any(|s| s.check(spec, args, &keys).is_ok() && s.allows_every_key(ACL_READ));
        allowed
    }

    /// Why this user may not run the command, if it may not (Redis' NOPERM texts): when
    /// no selector allows it, the most specific refusal among them.
    pub fn check(&self, spec: &CommandSpec, args: &Args) -> Result<(), Denial> {
        self.check_at(spec, args).map_err(|(denial, _)| denial)
    }

    /// [`AclUser::check`], with the refused key's or channel's argument position.
    fn check_at(&self, spec: &CommandSpec, args: &Args) -> Result<(), (Denial, usize)> {
        if self.unrestricted.load(Ordering::Relaxed) {
            return Ok(());
        }
        let r = self.rules.read();
        if r.all_selectors().all(|s| s.allkeys) {
            return check_selectors(&r, spec, args, &[]);
        }
        KEY_INDEXES.with(|cell| match cell.try_borrow_mut() {
            Ok(mut keys) => {
                keys.clear();
                acl_key_indexes_into(spec, args, &mut keys);
                check_selectors(&r, spec, args, &keys)
            }
            Err(_) => check_selectors(&r, spec, args, &acl_key_indexes(spec, args)),
        })
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

    /// The user as ACL LIST and the ACL file write it.
    fn describe(&self) -> String {
        let r = self.rules.read();
        let mut parts = vec![format!("user {}", self.name)];
        parts.extend(r.flags().iter().map(|f| f.to_string()));
        parts.extend(r.passwords.iter().map(|p| format!("#{p}")));
        parts.push(r.root.describe());
        parts.extend(r.selectors.iter().map(|s| format!("({})", s.describe())));
        parts.join(" ")
    }
}

/// The user's selectors in turn: Ok when one allows the command, else the most specific
/// refusal (command < key < channel; a later argument wins a tie), as Redis reports it.
fn check_selectors(
    r: &UserRules,
    spec: &CommandSpec,
    args: &Args,
    keys: &[usize],
) -> Result<(), (Denial, usize)> {
    let mut worst: Option<Refusal> = None;
    for selector in r.all_selectors() {
        match selector.check(spec, args, keys) {
            Ok(()) => return Ok(()),
            Err(refusal) => {
                let more_specific = worst
                    .as_ref()
                    .is_none_or(|w| (refusal.rank, refusal.position) > (w.rank, w.position));
                if more_specific {
                    worst = Some(refusal);
                }
            }
        }
    }
    match worst {
        Some(w) => Err((w.denial, w.position)),
        None => Ok(()),
    }
}

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
            let lines = user_lines(ctx.shared);
            ctx.reply.array(lines.len());
            for line in lines {
                ctx.reply.bulk(line.as_bytes());
            }
        }
        ("getuser", 3) => {
            let Some(u) = acl.user(ctx.arg(2)) else {
                return ctx.reply.null();
            };
            let r = u.rules.read().clone();
            let flags = r.flags();
            let out = &mut *ctx.reply;
            out.map(6);
            out.bulk(b"flags");
            // A set in RESP3, as Redis replies it.
            out.set(flags.len());
            for f in flags {
                out.bulk(f.as_bytes());
            }
            out.bulk(b"passwords");
            out.array(r.passwords.len());
            for p in &r.passwords {
                out.bulk(p.as_bytes());
            }
            // The root selector's fields stand at the top level, as before selectors.
            write_selector_fields(out, &r.root);
            out.bulk(b"selectors");
            out.array(r.selectors.len());
            for selector in &r.selectors {
                out.map(3);
                write_selector_fields(out, selector);
            }
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
            // A container's subcommands share its categories here: each is listed as
            // `name|sub`, as Redis lists subcommands.
            let names: Vec<String> = ctx
                .shared
                .commands
                .all()
                .iter()
                .filter(|s| s.acl.split_whitespace().any(|w| w == want))
                .flat_map(|s| {
                    std::iter::once(s.name.to_string())
                        .chain(s.subcommands.iter().map(|sub| format!("{}|{sub}", s.name)))
                })
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
            if !spec.arity_ok(args.len()) {
                return ctx.error(&format!(
                    "ERR wrong number of arguments for '{}' command",
                    spec.name
                ));
            }
            match u.check(spec, &args) {
                Ok(()) => ctx.reply.ok(),
                Err(denial) => {
                    let why = match &denial {
                        Denial::Command(name) => {
                            format!("This user has no permissions to run the '{name}' command")
                        }
                        Denial::Key(k) => format!(
                            "This user has no permissions to access the '{}' key",
                            String::from_utf8_lossy(k)
                        ),
                        Denial::Channel(c) => format!(
                            "This user has no permissions to access the '{}' channel",
                            String::from_utf8_lossy(c)
                        ),
                    };
                    ctx.reply.bulk(why.as_bytes());
                }
            }
        }
        (known, n) if !subcommand_arity_ok(known, n) => ctx.error(&format!(
            "ERR wrong number of arguments for 'acl|{known}' command"
        )),
        _ => ctx.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
            crate::dispatch::printable(ctx.arg(1), 128)
        )),
    }
}

/// Redis 7.0's arity of each ACL subcommand (negative: at least), checked before the
/// subcommand runs; an unknown subcommand passes, to get the generic error.
fn subcommand_arity_ok(sub: &str, argc: usize) -> bool {
    let arity: i64 = match sub {
        "getuser" => 3,
        "help" | "list" | "load" | "save" | "users" | "whoami" => 2,
        "deluser" | "setuser" => -3,
        "dryrun" => -4,
        "cat" | "genpass" | "log" => -2,
        _ => return true,
    };
    if arity >= 0 {
        argc as i64 == arity
    } else {
        argc as i64 >= -arity
    }
}

fn setuser(ctx: &mut Ctx<'_, '_>) {
    let name = String::from_utf8_lossy(ctx.arg(2)).into_owned();
    if name.contains(' ') || name.is_empty() {
        return ctx.error("ERR Usernames can't contain spaces or null characters");
    }
    let names = RuleNames::new(&ctx.shared.commands);
    let words: Vec<&[u8]> = (3..ctx.args.len()).map(|i| ctx.arg(i)).collect();
    let ops = match merge_selector_arguments(&words) {
        Ok(ops) => ops,
        Err(e) => return ctx.error(&format!("ERR {e}")),
    };
    let acl = &ctx.shared.acl;
    let existing = acl.user(name.as_bytes());
    let all_channels = all_channels_by_default(ctx.shared);
    let user = existing
        .clone()
        .unwrap_or_else(|| Arc::new(AclUser::new(&name, UserRules::empty(all_channels))));
    let mut failed = None;
    let result = user.update(|r| {
        r.all_channels_by_default = all_channels;
        for op in &ops {
            if let Err(e) = r.apply(op, &names) {
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
    } else {
        kill_subscribers_refused(ctx, &user);
    }
    ctx.reply.ok();
}

/// GETUSER's `commands`, `keys` and `channels` of one selector.
fn write_selector_fields(out: &mut carmine_resp::ReplyBuf, selector: &Selector) {
    out.bulk(b"commands");
    out.bulk(selector.describe_commands().as_bytes());
    out.bulk(b"keys");
    out.bulk(selector.describe_keys().as_bytes());
    out.bulk(b"channels");
    out.bulk(selector.describe_channels().as_bytes());
}

/// `acl-pubsub-default allchannels`: new users and selectors may use every channel.
fn all_channels_by_default(shared: &crate::Shared) -> bool {
    shared
        .config
        .get("acl-pubsub-default")
        .is_some_and(|v| v.eq_ignore_ascii_case("allchannels"))
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
    let names = RuleNames::new(&shared.commands);
    let all_channels = all_channels_by_default(shared);
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
        let words: Vec<&String> = words.collect();
        let ops =
            match merge_selector_arguments(&words.iter().map(|w| w.as_bytes()).collect::<Vec<_>>())
            {
                Ok(ops) => ops,
                Err(e) => {
                    errors.push_str(&format!("{source}:{line}: {e} "));
                    continue;
                }
            };
        let mut rules = UserRules::empty(all_channels);
        for op in &ops {
            let op = String::from_utf8_lossy(op);
            if let Err(e) = rules.apply(op.as_bytes(), &names) {
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

/// Every user as ACL LIST shows it (`user <name> <rules>`): the lines of the ACL file,
/// and those CONFIG REWRITE writes.
pub fn user_lines(shared: &crate::Shared) -> Vec<String> {
    let users: Vec<Arc<AclUser>> = shared.acl.users.read().values().cloned().collect();
    users.iter().map(|u| u.describe()).collect()
}

/// ACL SAVE: every user as ACL LIST shows it, one per line, written to a temporary file
/// that then replaces `path`.
fn save_file(shared: &crate::Shared, path: &str) -> Result<(), String> {
    let mut text = String::new();
    for line in user_lines(shared) {
        text.push_str(&line);
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

/// After a change to `user`, its connections subscribed to a channel or pattern the
/// user may no longer use are closed, as Redis closes them.
fn kill_subscribers_refused(ctx: &mut Ctx<'_, '_>, user: &AclUser) {
    let rules = user.rules.read().clone();
    let pubsub = &ctx.shared.pubsub;
    let refused: Vec<_> = ctx
        .shared
        .clients
        .snapshot()
        .into_iter()
        .filter(|c| *c.user.lock() == user.name)
        .filter(|c| {
            pubsub.subscriptions_of(c.id).iter().any(|(kind, name)| {
                !rules.allows_channel(name, *kind == crate::pubsub::Kind::Pattern)
            })
        })
        .collect();
    for c in refused {
        ctx.close_client(&c);
    }
}

/// Redis disconnects the clients of a deleted user.
fn kill_clients_of(ctx: &mut Ctx<'_, '_>, name: &str) {
    for c in ctx.shared.clients.snapshot() {
        if *c.user.lock() == name {
            ctx.close_client(&c);
        }
    }
}
