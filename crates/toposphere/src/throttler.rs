//! The topology part of Vitess's `UpdateThrottlerConfig`: the keyspace record's
//! `throttler_config`, copied into every cell's SrvKeyspace (where tablets read it).

use topo_core::Result;
use topo_proto::topodata::ThrottlerConfig;

use crate::Server;

impl Server {
    /// Under the keyspace lock, applies `update` to the keyspace's throttler config (an empty
    /// one when unset) and saves it, then applies it to the SrvKeyspace of every cell that
    /// has one, as Vitess's server does. Returns the keyspace's new config.
    ///
    /// # Errors
    /// Those of locking, reading and writing the keyspace and the SrvKeyspaces.
    pub async fn update_throttler_config<F>(&self, ks: &str, update: F) -> Result<ThrottlerConfig>
    where
        F: Fn(&mut ThrottlerConfig),
    {
        let lock = self.lock_keyspace(ks, "UpdateThrottlerConfig").await?;
        let result = async {
            let mut ki = self.get_keyspace(ks).await?;
            let mut config = ki.keyspace.throttler_config.clone().unwrap_or_default();
            update(&mut config);
            ki.keyspace.throttler_config = Some(config.clone());
            self.update_keyspace(&lock, &mut ki).await?;
            for cell in self.get_cell_info_names().await? {
                let mut srv = match self.get_srv_keyspace(&cell, ks).await {
                    Ok(s) => s,
                    Err(e) if e.is_no_node() => continue,
                    Err(e) => return Err(e),
                };
                let mut cell_config = srv.throttler_config.clone().unwrap_or_default();
                update(&mut cell_config);
                srv.throttler_config = Some(cell_config);
                self.update_srv_keyspace(&cell, ks, &srv).await?;
            }
            Ok(config)
        }
        .await;
        let unlocked = lock.unlock().await;
        let config = result?;
        unlocked?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn throttler_config_reaches_the_keyspace_and_its_srv_keyspaces() {
        let ts = crate::validate::tests::server().await;
        ts.rebuild_keyspace("ks", &[], false).await.unwrap();
        let config = ts
            .update_throttler_config("ks", |c| {
                c.enabled = true;
                c.threshold = 2.5;
            })
            .await
            .unwrap();
        assert!(config.enabled);
        let ks = ts.get_keyspace("ks").await.unwrap();
        assert_eq!(
            ks.keyspace.throttler_config.as_ref().map(|c| c.threshold),
            Some(2.5)
        );
        let srv = ts.get_srv_keyspace("zone1", "ks").await.unwrap();
        assert_eq!(srv.throttler_config.map(|c| c.enabled), Some(true));
    }
}
