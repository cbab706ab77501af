//! A rumqttc v5 (MQTT 5) client with its event loop in a task, for the MQTT 5 tests.

use crate::{TestNode, TIMEOUT};
use anyhow::{bail, ensure, Context};
use rumqttc::v5 as r5;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A rumqttc v5 client whose event loop runs in a task.
pub struct Rumqtt5 {
    /// The client handle.
    pub client: r5::AsyncClient,
    incoming: mpsc::UnboundedReceiver<anyhow::Result<r5::mqttbytes::v5::Packet>>,
    task: tokio::task::JoinHandle<()>,
}

impl Rumqtt5 {
    /// Connect with default options (keep alive 30 s) and return the CONNACK.
    pub async fn connect(
        node: &TestNode,
        id: &str,
    ) -> anyhow::Result<(Rumqtt5, r5::mqttbytes::v5::ConnAck)> {
        let mut options = r5::MqttOptions::new(id, node.mqtt.ip().to_string(), node.mqtt.port());
        options.set_keep_alive(Duration::from_secs(30));
        Self::connect_with(options).await
    }

    /// Connect with explicit options and return the CONNACK.
    pub async fn connect_with(
        options: r5::MqttOptions,
    ) -> anyhow::Result<(Rumqtt5, r5::mqttbytes::v5::ConnAck)> {
        let (client, mut eventloop) = r5::AsyncClient::new(options, 256);
        let (tx, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(r5::Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(r5::Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("rumqttc v5: {e}")));
                        return;
                    }
                }
            }
        });
        let mut this = Rumqtt5 {
            client,
            incoming,
            task,
        };
        let ack = this
            .wait_for(|p| match p {
                r5::mqttbytes::v5::Packet::ConnAck(a) => Some(a.clone()),
                _ => None,
            })
            .await
            .context("waiting for CONNACK")?;
        Ok((this, ack))
    }

    /// Return the first incoming packet `pick` maps to `Some`, skipping the others.
    pub async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&r5::mqttbytes::v5::Packet) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Err(_) => bail!("no matching packet within {TIMEOUT:?}"),
                Ok(None) => bail!("event loop ended"),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(p))) => {
                    if let Some(v) = pick(&p) {
                        return Ok(v);
                    }
                }
            }
        }
    }

    /// Return the next incoming PUBLISH.
    pub async fn next_publish(&mut self) -> anyhow::Result<r5::mqttbytes::v5::Publish> {
        self.wait_for(|p| match p {
            r5::mqttbytes::v5::Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribe to one filter and fail unless the SUBACK grants it.
    pub async fn subscribe(&mut self, filter: r5::mqttbytes::v5::Filter) -> anyhow::Result<()> {
        self.client.subscribe_many(vec![filter]).await?;
        let codes = self
            .wait_for(|p| match p {
                r5::mqttbytes::v5::Packet::SubAck(a) => Some(a.return_codes.clone()),
                _ => None,
            })
            .await?;
        ensure!(
            matches!(
                codes.as_slice(),
                [r5::mqttbytes::v5::SubscribeReasonCode::Success(_)]
            ),
            "{codes:?}"
        );
        Ok(())
    }
}

impl Drop for Rumqtt5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subscription filter with default options.
pub fn filter(path: &str, qos: r5::mqttbytes::QoS) -> r5::mqttbytes::v5::Filter {
    r5::mqttbytes::v5::Filter::new(path, qos)
}
