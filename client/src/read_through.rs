//! Read-through loading: [`Client::get_or_load`] and friends, with single-flight per client.
//!
//! A call reads the key at the client's default consistency; on a hit it returns the value. On
//! a miss it calls the loader, stores the result with the TTL and returns it. Concurrent calls
//! for one key on one client (and its clones) share a *flight*: the first caller reads, loads
//! and stores; the others wait for its outcome, value or error, and never run their own loader.
//!
//! Choices, and why:
//! * **The store is `IfAbsent`.** If another process stored the key between our miss and our
//!   write, the stored value wins: we re-read it (at least at the version our refused write
//!   saw) and return that, so every process converges on one value instead of the last loader
//!   silently overwriting a newer one. If the key is gone again by then, our value is returned.
//! * **A failed store is not an error.** The loaded value is correct whether or not the cache
//!   kept it, so it is returned (and the failure logged at `warn`); the next call loads again.
//! * **A failed read is an error.** The loader is not called when the cache cannot be read:
//!   falling through to the backing store whenever the cache is down would hide the outage and
//!   send every process's misses to that store at once. Callers who prefer to load anyway can
//!   match the error and call their loader themselves.
//! * **Loader errors are shared, not cached.** Every caller waiting on a flight gets
//!   [`Error::Loader`] with the loader error's text; nothing is stored, and the next call after
//!   the flight ends starts a new one.
//! * **Typed values are JSON**, as in `set_json`/`get_json`; waiters receive the stored bytes
//!   and decode them, so the value type needs no `Clone`/`Send`/`'static` bounds and the loader
//!   may borrow from its caller. [`Client::get_or_load_bytes`] skips JSON.
//!
//! Invariants: at most one flight per key per client at a time; a flight leaves the table
//! before its outcome is published, so a call that starts after a flight ended starts a new one;
//! if the leading caller is cancelled (its future dropped) or its loader panics, the flight ends
//! without an outcome and one of its waiters leads a new one.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::options::{check_key, ttl_ms, Condition, SetOptions};
use crate::typed::{decode, encode};

/// A flight's outcome as its waiters see it: the value's bytes, or the error.
type Outcome = Option<Result<Bytes>>;

/// The flights in progress, one per key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    // A std mutex: only held to look up, insert or remove, never across an await.
    in_flight: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
}

enum Role<'a> {
    /// This caller reads, loads and stores, then publishes.
    Lead(Flight<'a>),
    /// This caller waits for the leader's outcome.
    Join(watch::Receiver<Outcome>),
}

impl Flights {
    fn join_or_lead(&self, key: &str) -> Role<'_> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = in_flight.get(key) {
            return Role::Join(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        in_flight.insert(key.to_string(), rx.clone());
        Role::Lead(Flight { flights: self, key: key.to_string(), tx: Some(tx), mine: rx })
    }

    /// Removes `key`'s flight if it is still `mine` (a later flight of the key stays).
    fn remove(&self, key: &str, mine: &watch::Receiver<Outcome>) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if in_flight.get(key).is_some_and(|rx| rx.same_channel(mine)) {
            in_flight.remove(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }
}

/// A led flight. Dropping it without [`land`](Flight::land) ends it without an outcome.
struct Flight<'a> {
    flights: &'a Flights,
    key: String,
    tx: Option<watch::Sender<Outcome>>,
    mine: watch::Receiver<Outcome>,
}

impl Flight<'_> {
    /// Ends the flight and hands `outcome` to its waiters.
    fn land(mut self, outcome: Result<Bytes>) {
        // Leave the table first, so a caller arriving from now on starts a new flight rather
        // than receiving this (possibly failed) outcome.
        self.flights.remove(&self.key, &self.mine);
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(outcome));
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // Cancelled or panicked: dropping `tx` wakes the waiters, and one of them leads anew.
        self.flights.remove(&self.key, &self.mine);
    }
}

fn loader_error(e: impl Display) -> Error {
    Error::Loader(e.to_string())
}

impl Client {
    /// Returns the value of `key`, loading and storing it on a miss (read-through).
    ///
    /// Reads at the client's default consistency ([`ClientBuilder::default_consistency`]).
    /// On a miss, calls `loader`, stores its value as JSON with the client's default TTL
    /// ([`ClientBuilder::default_ttl`]) and returns it. Concurrent calls for the same key on
    /// this client share one read and at most one loader call (single-flight); all of them get
    /// its result. If another process stored the key first, its value is returned. See the
    /// module doc of `src/read_through.rs` for every choice made.
    ///
    /// Errors: [`Error::Loader`] if the loader failed (returned to every waiting caller;
    /// nothing is stored), [`Error::Decode`] if the stored value is not JSON of type `T`, and
    /// the read's own errors (the loader is then not called). A failure to *store* the loaded
    /// value is logged, not returned.
    ///
    /// ```no_run
    /// # use geocache_client::Client;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct User { name: String }
    /// # async fn load_user() -> Result<User, std::io::Error> { Ok(User { name: "ada".into() }) }
    /// # async fn example(cache: Client) -> geocache_client::Result<()> {
    /// let user: User = cache.get_or_load("user:42", load_user).await?;
    /// # let _ = user;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`ClientBuilder::default_consistency`]: crate::ClientBuilder::default_consistency
    /// [`ClientBuilder::default_ttl`]: crate::ClientBuilder::default_ttl
    pub async fn get_or_load<T, F, Fut, E>(&self, key: impl Into<String>, loader: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Display,
    {
        self.get_or_load_with(key, self.inner.default_ttl, loader).await
    }

    /// [`get_or_load`](Self::get_or_load) with this call's own time to live (`None`: the value
    /// does not expire). Concurrent callers of one key share the first caller's flight, and so
    /// its TTL.
    pub async fn get_or_load_with<T, F, Fut, E>(
        &self,
        key: impl Into<String>,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Display,
    {
        let key = key.into();
        let load = async {
            let value = loader().await.map_err(loader_error)?;
            Ok((Bytes::from(encode(&value)?), value))
        };
        let (bytes, own) = self.read_through(&key, ttl, load).await?;
        match own {
            Some(value) => Ok(value),
            None => decode(&key, &bytes),
        }
    }

    /// [`get_or_load`](Self::get_or_load) for raw bytes: no JSON, the loader's value is stored
    /// as it is.
    pub async fn get_or_load_bytes<V, F, Fut, E>(&self, key: impl Into<String>, loader: F) -> Result<Bytes>
    where
        V: Into<Bytes>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
        E: Display,
    {
        self.get_or_load_bytes_with(key, self.inner.default_ttl, loader).await
    }

    /// [`get_or_load_bytes`](Self::get_or_load_bytes) with this call's own time to live.
    pub async fn get_or_load_bytes_with<V, F, Fut, E>(
        &self,
        key: impl Into<String>,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<Bytes>
    where
        V: Into<Bytes>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
        E: Display,
    {
        let key = key.into();
        let load = async {
            let bytes: Bytes = loader().await.map_err(loader_error)?.into();
            Ok((bytes, ()))
        };
        Ok(self.read_through(&key, ttl, load).await?.0)
    }

    /// Joins `key`'s flight, or leads one that runs [`read_or_load`](Self::read_or_load) with
    /// `load`. Returns the value's bytes, plus the loaded value itself when this caller's own
    /// `load` produced what was returned.
    async fn read_through<T>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: impl Future<Output = Result<(Bytes, T)>>,
    ) -> Result<(Bytes, Option<T>)> {
        check_key(key)?;
        if let Some(ttl) = ttl {
            ttl_ms(ttl)?;
        }
        let mut load = Some(load);
        loop {
            match self.inner.flights.join_or_lead(key) {
                Role::Join(mut rx) => {
                    let outcome = rx.wait_for(Option::is_some).await.map(|o| o.clone());
                    match outcome {
                        Ok(Some(outcome)) => return outcome.map(|bytes| (bytes, None)),
                        // The leader was cancelled or panicked: try again (maybe as leader).
                        _ => continue,
                    }
                }
                Role::Lead(flight) => {
                    let load = load.take().expect("a caller leads at most one flight");
                    let result = self.read_or_load(key, ttl, load).await;
                    flight.land(result.as_ref().map(|(bytes, _)| bytes.clone()).map_err(Error::clone));
                    return result;
                }
            }
        }
    }

    /// The leader's work: read; on a miss load, store `IfAbsent`, and settle a lost race.
    async fn read_or_load<T>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: impl Future<Output = Result<(Bytes, T)>>,
    ) -> Result<(Bytes, Option<T>)> {
        let read = self.default_read();
        if let Some(entry) = self.get_with(key, read).await? {
            return Ok((entry.value, None));
        }
        let (bytes, value) = load.await?;
        let store = SetOptions { ttl, condition: Condition::IfAbsent };
        match self.set_with(key, bytes.clone(), store).await {
            Ok(w) if w.applied => Ok((bytes, Some(value))),
            Ok(w) => {
                // Someone stored the key since our miss: theirs wins. Read at least the version
                // our refused write saw, wherever the read lands.
                let read = if w.version > 0 { read.with_min_version(w.version) } else { read };
                match self.get_with(key, read).await {
                    Ok(Some(entry)) => Ok((entry.value, None)),
                    Ok(None) => Ok((bytes, Some(value))),
                    Err(e) => {
                        debug!(key, error = %e, "get_or_load: cannot read the value stored first; returning ours");
                        Ok((bytes, Some(value)))
                    }
                }
            }
            Err(e) => {
                warn!(key, error = %e, "get_or_load: could not store the loaded value; returning it uncached");
                Ok((bytes, Some(value)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &'static [u8]) -> Result<Bytes> {
        Ok(Bytes::from_static(bytes))
    }

    #[tokio::test]
    async fn waiters_get_the_leaders_outcome_and_the_table_empties() {
        let flights = Flights::default();
        let Role::Lead(flight) = flights.join_or_lead("k") else { panic!("first caller leads") };
        let Role::Join(mut rx) = flights.join_or_lead("k") else { panic!("second caller joins") };
        assert!(matches!(flights.join_or_lead("other"), Role::Lead(_)), "keys fly apart");
        flight.land(ok(b"v"));
        assert_eq!(flights.len(), 0, "landing leaves the table");
        assert_eq!(rx.wait_for(Option::is_some).await.unwrap().clone(), Some(ok(b"v")));
        assert!(matches!(flights.join_or_lead("k"), Role::Lead(_)), "a later caller starts anew");
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters() {
        let flights = Flights::default();
        let Role::Lead(flight) = flights.join_or_lead("k") else { panic!() };
        let Role::Join(mut rx) = flights.join_or_lead("k") else { panic!() };
        drop(flight);
        assert!(rx.wait_for(Option::is_some).await.is_err());
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_stale_flight_never_removes_a_newer_one() {
        let flights = Flights::default();
        let Role::Lead(old) = flights.join_or_lead("k") else { panic!() };
        let old_rx = old.mine.clone();
        old.land(ok(b"1"));
        let Role::Lead(_new) = flights.join_or_lead("k") else { panic!() };
        flights.remove("k", &old_rx);
        assert_eq!(flights.len(), 1);
    }
}
