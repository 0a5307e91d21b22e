//! `imfree client group …`: create groups, change their members, show what this device verified.

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use imfree_client::groups::parse_group;
use imfree_client::ClientError;
use imfree_crypto::membership::{InfoKind, Permissions, Role};

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group with you as its only member and admin; prints its id (send to it as `group:<id>`).
    Create {
        /// A name for the group (end-to-end encrypted; members see it).
        #[arg(default_value = "")]
        name: String,
    },
    /// Add a user to a group (admins only). They read what is sent from now on, not what came before.
    Add {
        /// The group (`group:<id>` or the id).
        group: String,
        /// The user.
        user: String,
    },
    /// Remove a user from a group (admins only). Every member's sender keys are replaced: they read nothing after.
    Remove {
        /// The group.
        group: String,
        /// The user.
        user: String,
    },
    /// Leave a group.
    Leave {
        /// The group.
        group: String,
    },
    /// Show a group's members as verified by this device from the signed membership log.
    Info {
        /// The group.
        group: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the groups this device knows.
    List,
    /// Rename a group (by default admins and owners): the log records that it was renamed, members receive the name
    /// end to end.
    Rename {
        /// The group.
        group: String,
        /// The new name.
        name: String,
    },
    /// Set a group's topic (same rights as rename).
    Topic {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
    },
    /// Give a member a role: owner, admin, member or read-only. Admins and owners set roles up to their own.
    Role {
        /// The group.
        group: String,
        /// The member.
        user: String,
        /// owner, admin, member or read-only.
        role: String,
    },
    /// Open an invite link (needs the right to add members): whoever holds it may join as a member until it is
    /// closed. Share it only over a channel you trust. With --close LINK, close that link instead.
    InviteLink {
        /// The group.
        group: String,
        /// Close this link.
        #[arg(long, value_name = "LINK")]
        close: Option<String>,
    },
    /// Join a group through an invite link (imfree-invite:…).
    Join {
        /// The link.
        link: String,
    },
    /// Show the group's permissions, or change them (owners only): for each action, the lowest role allowed.
    Permissions {
        /// The group.
        group: String,
        /// Who may add members.
        #[arg(long, value_name = "ROLE")]
        add: Option<String>,
        /// Who may remove members (never anyone of a higher role).
        #[arg(long, value_name = "ROLE")]
        remove: Option<String>,
        /// Who may post.
        #[arg(long, value_name = "ROLE")]
        post: Option<String>,
        /// Who may rename the group and set its topic.
        #[arg(long, value_name = "ROLE")]
        edit_info: Option<String>,
        /// Who may delete other members' messages.
        #[arg(long, value_name = "ROLE")]
        delete: Option<String>,
    },
}

fn role(name: &str) -> anyhow::Result<Role> {
    Role::parse(name).ok_or_else(|| anyhow::anyhow!("{name:?} is not a role: owner, admin, member or read-only"))
}

fn print_permissions(p: &Permissions) {
    for (what, r) in [("add", p.add_members), ("remove", p.remove_members), ("post", p.post), ("edit-info", p.edit_info), ("delete", p.delete_others)] {
        println!("  {what:<10} {}", r.as_str().replace('_', "-"));
    }
}

pub(crate) async fn run(home: Option<&Path>, command: GroupCommand) -> anyhow::Result<()> {
    let client = crate::client::open_client(home).await?;
    if let GroupCommand::List = command {
        for (id, name, status) in client.store().groups().await? {
            println!("group:{id}\t{status}\t{name}");
        }
        return Ok(());
    }
    let mut session = client.connect().await?;
    match command {
        GroupCommand::Create { name } => {
            let id = session.create_group(&name).await?;
            println!("group:{id}");
        }
        GroupCommand::Add { group, user } => {
            session.group_add(&parse_group(&group)?, &user).await?;
            println!("added {user}");
        }
        GroupCommand::Remove { group, user } => {
            session.group_remove(&parse_group(&group)?, &user).await?;
            println!("removed {user}; sender keys are replaced before the next message");
        }
        GroupCommand::Leave { group } => {
            session.group_leave(&parse_group(&group)?).await?;
            println!("left the group");
        }
        GroupCommand::Info { group, json } => {
            let info = session.group_info(&parse_group(&group)?).await?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!("group:{} {}", info.id, info.name);
                if let Some(topic) = &info.topic {
                    println!("topic {topic}");
                }
                println!("status {}", info.status);
                println!("log head {}", info.head_seq);
                for (user, role) in &info.roles {
                    println!("  {user} ({})", role.as_str().replace('_', "-"));
                }
            }
        }
        GroupCommand::Rename { group, name } => {
            session.group_set_info(&parse_group(&group)?, InfoKind::Name, &name).await?;
            println!("renamed");
        }
        GroupCommand::Topic { group, topic } => {
            session.group_set_info(&parse_group(&group)?, InfoKind::Topic, &topic).await?;
            println!("topic set");
        }
        GroupCommand::Role { group, user, role: r } => {
            session.group_set_role(&parse_group(&group)?, &user, role(&r)?).await?;
            println!("{user} is now {}", role(&r)?.as_str().replace('_', "-"));
        }
        GroupCommand::Permissions { group, add, remove, post, edit_info, delete } => {
            let group = parse_group(&group)?;
            let current = session.group_info(&group).await?.permissions;
            if add.is_none() && remove.is_none() && post.is_none() && edit_info.is_none() && delete.is_none() {
                print_permissions(&current);
            } else {
                let pick = |given: Option<String>, now: Role| given.map(|g| role(&g)).transpose().map(|r| r.unwrap_or(now));
                let wanted = Permissions {
                    add_members: pick(add, current.add_members)?,
                    remove_members: pick(remove, current.remove_members)?,
                    post: pick(post, current.post)?,
                    edit_info: pick(edit_info, current.edit_info)?,
                    delete_others: pick(delete, current.delete_others)?,
                };
                session.group_set_permissions(&group, wanted).await?;
                print_permissions(&wanted);
            }
        }
        GroupCommand::InviteLink { group, close } => {
            let group = parse_group(&group)?;
            match close {
                Some(link) => {
                    if imfree_client::groups::parse_invite_link(&link)?.0 != group {
                        anyhow::bail!("that link is for another group");
                    }
                    session.group_close_invite_link(&link).await?;
                    println!("closed");
                }
                None => println!("{}", session.group_invite_link(&group).await?),
            }
        }
        GroupCommand::Join { link } => {
            let group = session.group_join(&link).await?;
            println!("group:{group}");
        }
        GroupCommand::List => {}
    }
    // Membership updates to the other members go out before this command ends.
    match session.sync_outbox(Duration::from_secs(30)).await {
        Ok(()) | Err(ClientError::IdentityChanged { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    session.close().await;
    Ok(())
}
