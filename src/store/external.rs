//! Accounts that belong to an identity elsewhere: the operator's own app
//! (`[auth.external]` tokens) or an OpenID Connect provider. An account is
//! linked to the pair (issuer, subject), never to a name, so a rename at
//! the issuer keeps the account.

use super::*;

/// The link of one account to its identity at an issuer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExternalLink {
    pub issuer: String,
    pub subject: String,
    /// Tokens of this issuer issued (`iat`, ms) before this are no longer
    /// accepted: "log out everywhere" for tokens confab did not issue.
    #[serde(default)]
    pub not_before: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ExternalCommand {
    /// The account linked to (issuer, subject), made now if there is none.
    /// The username is `username` or, if that is taken, the first of
    /// `username-2`, `username-3`, ... that is free: decided here, against
    /// the state the command lands on, so two nodes that both saw no
    /// account make one, and the same one.
    Link {
        id: Id,
        issuer: String,
        subject: String,
        username: String,
        role: Role,
    },
    /// Ends every token of the account's issuer issued until now.
    EndTokens { user: Id },
}

pub(super) fn apply(tx: &mut Tx, cmd: ExternalCommand) -> Result<Outcome> {
    match cmd {
        ExternalCommand::Link {
            id,
            issuer,
            subject,
            username,
            role,
        } => {
            let existing = tx
                .txn
                .open_table(EXTERNAL_SUBJECT_TO_USER)?
                .get((issuer.as_str(), subject.as_str()))?
                .map(|v| Id(v.value()));
            if let Some(user) = existing
                && let Some(rec) = tx.user(user)?
            {
                return Ok(Outcome::User(rec));
            }
            let name = free_name(tx, &username)?;
            let rec = tx.create_user(NewUser {
                id,
                username: name,
                // Tokens never grant admin, whatever the submitter says.
                role: if role == Role::Admin {
                    Role::User
                } else {
                    role
                },
                // No hash: no password can ever match it.
                password_hash: String::new(),
            })?;
            tx.txn
                .open_table(EXTERNAL_SUBJECT_TO_USER)?
                .insert((issuer.as_str(), subject.as_str()), id.0)?;
            let link = ExternalLink {
                issuer,
                subject,
                not_before: 0,
            };
            tx.txn
                .open_table(USER_TO_EXTERNAL)?
                .insert(id.0, encode(&link).as_slice())?;
            Ok(Outcome::User(rec))
        }
        ExternalCommand::EndTokens { user } => {
            let now = tx.now;
            let mut table = tx.txn.open_table(USER_TO_EXTERNAL)?;
            let link: Option<ExternalLink> = table
                .get(user.0)?
                .map(|v| decode("user_to_external", v.value()))
                .transpose()?;
            if let Some(mut link) = link {
                link.not_before = now;
                table.insert(user.0, encode(&link).as_slice())?;
            }
            Ok(Outcome::Done)
        }
    }
}

fn free_name(tx: &mut Tx, base: &str) -> Result<String> {
    let names = tx.txn.open_table(USERNAME_TO_USER)?;
    if names.get(base)?.is_none() {
        return Ok(base.to_string());
    }
    for n in 2u32..10_000 {
        let suffix = format!("-{n}");
        let keep = base.len().min(32 - suffix.len());
        let candidate = format!("{}{suffix}", &base[..keep]);
        if names.get(candidate.as_str())?.is_none() {
            return Ok(candidate);
        }
    }
    Err(StoreError::Conflict("username is taken".into()))
}

impl Rx {
    /// The account linked to (issuer, subject), if any.
    pub fn external_user(&self, issuer: &str, subject: &str) -> Result<Option<Id>> {
        Ok(self
            .txn
            .open_table(EXTERNAL_SUBJECT_TO_USER)?
            .get((issuer, subject))?
            .map(|v| Id(v.value())))
    }

    /// What an account is linked to, if it is.
    pub fn external_link(&self, user: Id) -> Result<Option<ExternalLink>> {
        self.txn
            .open_table(USER_TO_EXTERNAL)?
            .get(user.0)?
            .map(|v| decode("user_to_external", v.value()))
            .transpose()
    }
}
