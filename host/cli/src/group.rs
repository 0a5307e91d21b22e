//! `imfree client group …`: create groups, change their members, show what this device verified.

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use imfree_client::groups::parse_group;
use imfree_client::ClientError;

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
                println!("status {}", info.status);
                println!("log head {}", info.head_seq);
                for (user, admin) in &info.members {
                    println!("  {user}{}", if *admin { " (admin)" } else { "" });
                }
            }
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
