//! `tlsward store init`.

use anyhow::Context;

use super::{StoreArgs, StoreCommand};
use crate::store::Store;

pub(super) fn run(args: StoreArgs) -> anyhow::Result<u8> {
    match args.command {
        StoreCommand::Init => {
            let config = crate::config::load(&args.file.config)?;
            let path = &config.store.path;
            Store::init(path, &config.store.key)
                .with_context(|| format!("cannot create the store {}", path.display()))?;
            println!("{}: created a new, empty store", path.display());
            Ok(0)
        }
    }
}
