//! Who is acting, and with which keys. Organised as in the original ATE: a
//! user role, an optional elevated (sudo) role, and groups whose roles
//! (owner, delegate, contributor, observer, custom) each hold read keys,
//! private read keys (for keys shared through ML-KEM) and write keys.
//!
//! A session is a bag of secrets held by the application; it is never sent
//! anywhere. `Debug` prints key ids only.

use crate::crypto::{KeyId, PrivateEncryptKey, PrivateSignKey, ReadKey};

/// What a role is for within a group (or the user's own roles).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum RolePurpose {
    #[default]
    Owner,
    Delegate,
    Contributor,
    Observer,
    Other(String),
}

/// Keys held in one role.
#[derive(Debug, Clone, Default)]
pub struct Role {
    pub purpose: RolePurpose,
    pub read_keys: Vec<ReadKey>,
    pub private_read_keys: Vec<PrivateEncryptKey>,
    pub write_keys: Vec<PrivateSignKey>,
}

impl Role {
    pub fn new(purpose: RolePurpose) -> Self {
        Self { purpose, ..Self::default() }
    }
}

/// A named group and the roles of it this session holds.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub name: String,
    pub roles: Vec<Role>,
}

/// The caller's identity and keys, handed to [`crate::Chain::dio`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AteSession {
    /// Free-text identity for logs (never a secret).
    pub identity: Option<String>,
    pub user: Role,
    pub sudo: Option<Role>,
    pub groups: Vec<Group>,
}

impl AteSession {
    pub fn new(identity: impl Into<String>) -> Self {
        Self { identity: Some(identity.into()), ..Self::default() }
    }

    pub fn add_user_read_key(&mut self, key: ReadKey) -> &mut Self {
        self.user.read_keys.push(key);
        self
    }
    pub fn add_user_private_read_key(&mut self, key: PrivateEncryptKey) -> &mut Self {
        self.user.private_read_keys.push(key);
        self
    }
    pub fn add_user_write_key(&mut self, key: PrivateSignKey) -> &mut Self {
        self.user.write_keys.push(key);
        self
    }

    fn sudo_role(&mut self) -> &mut Role {
        self.sudo.get_or_insert_with(|| Role::new(RolePurpose::Owner))
    }
    pub fn add_sudo_read_key(&mut self, key: ReadKey) -> &mut Self {
        self.sudo_role().read_keys.push(key);
        self
    }
    pub fn add_sudo_write_key(&mut self, key: PrivateSignKey) -> &mut Self {
        self.sudo_role().write_keys.push(key);
        self
    }

    /// The role `purpose` of group `name`, created empty if absent.
    pub fn group_role(&mut self, name: &str, purpose: RolePurpose) -> &mut Role {
        let index = match self.groups.iter().position(|group| group.name == name) {
            Some(index) => index,
            None => {
                self.groups.push(Group { name: name.to_string(), roles: Vec::new() });
                self.groups.len() - 1
            }
        };
        let roles = &mut self.groups[index].roles;
        let role = match roles.iter().position(|role| role.purpose == purpose) {
            Some(role) => role,
            None => {
                roles.push(Role::new(purpose));
                roles.len() - 1
            }
        };
        &mut roles[role]
    }

    /// Every role in the session: user, sudo, then each group's roles.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        std::iter::once(&self.user)
            .chain(self.sudo.iter())
            .chain(self.groups.iter().flat_map(|group| group.roles.iter()))
    }

    pub fn read_keys(&self) -> impl Iterator<Item = &ReadKey> {
        self.roles().flat_map(|role| role.read_keys.iter())
    }
    pub fn private_read_keys(&self) -> impl Iterator<Item = &PrivateEncryptKey> {
        self.roles().flat_map(|role| role.private_read_keys.iter())
    }
    pub fn write_keys(&self) -> impl Iterator<Item = &PrivateSignKey> {
        self.roles().flat_map(|role| role.write_keys.iter())
    }

    pub fn read_key(&self, id: &KeyId) -> Option<&ReadKey> {
        self.read_keys().find(|key| key.id() == *id)
    }
    pub fn write_key(&self, id: &KeyId) -> Option<&PrivateSignKey> {
        self.write_keys().find(|key| key.id() == *id)
    }
    pub fn private_read_key(&self, id: &KeyId) -> Option<&PrivateEncryptKey> {
        self.private_read_keys().find(|key| key.id() == *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SignatureScheme;

    #[test]
    fn keys_are_found_in_every_role() {
        let mut session = AteSession::new("alice");
        let user_read = ReadKey::generate().unwrap();
        let group_read = ReadKey::generate().unwrap();
        let sudo_write = PrivateSignKey::generate(SignatureScheme::MlDsa44);
        session.add_user_read_key(user_read.clone()).add_sudo_write_key(sudo_write.clone());
        session.group_role("finance", RolePurpose::Observer).read_keys.push(group_read.clone());
        session
            .group_role("finance", RolePurpose::Observer)
            .write_keys
            .push(PrivateSignKey::generate(SignatureScheme::MlDsa44));
        assert_eq!(session.groups.len(), 1);
        assert_eq!(session.groups[0].roles.len(), 1);
        assert!(session.read_key(&user_read.id()).is_some());
        assert!(session.read_key(&group_read.id()).is_some());
        assert!(session.write_key(&sudo_write.id()).is_some());
        assert_eq!(session.write_keys().count(), 2);
        assert!(session.read_key(&ReadKey::generate().unwrap().id()).is_none());
        assert!(!format!("{session:?}").contains(&format!("{:?}", user_read.secret())));
    }
}
