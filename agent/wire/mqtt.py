"""One MQTT v5 connection with TLS, auth, a persistent session and reconnects with exponential
backoff and jitter; shared by the agent's publisher and central's ingest.

paho's receive path costs tens of microseconds of Python per message (four socket reads and a
select per packet, an MQTTMessage with a threading.Condition, a Properties object that walks
every property name), which at thousands of messages per second was a third of central's CPU.
`_Client` overrides three of paho's private methods to read the socket in large chunks and, for
a subscriber that asks for raw messages, to parse PUBLISH without those objects; PUBACKs of a
batch go out as one write. tests/datapath/test_mqtt.py holds paho to what these rely on.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import struct
import threading
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pantau.agent.wire.backoff import Backoff
from pantau.agent.wire.settings import BrokerSettings

log = logging.getLogger(__name__)

# What one socket read asks for: many queued messages arrive in one call.
READ_CHUNK = 256 * 1024
# Packets handled per loop turn at most, so that writes (acks) and keepalives are not starved.
MAX_PACKETS_PER_TURN = 1000
_PUBACK = struct.Struct("!BBH")  # PUBACK, remaining length 2, packet id: success, no properties

# A received PUBLISH without paho's objects: topic, payload, packet id, QoS, retain.
RawHandler = Callable[[bytes, bytes, int, int, bool], None]


class _Client(mqtt.Client):
    """paho's client with buffered socket reads and, when `on_raw` is given, a lean PUBLISH path
    (QoS 0 and 1; its properties are skipped, so only for subscribers that need none)."""

    def __init__(self, *args, on_raw: RawHandler | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._on_raw = on_raw
        self._rbuf = b""
        self._rpos = 0

    @property
    def buffered(self) -> bool:
        """Whether bytes already read from the socket wait to be handled."""
        return self._rpos < len(self._rbuf)

    def reconnect(self) -> MQTTErrorCode:
        self._rbuf, self._rpos = b"", 0  # the old connection's bytes are no packets of this one
        return super().reconnect()

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho reads a packet's first byte, then its length a byte at a time, then its body:
        # serve those from one large read.
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(max(bufsize, READ_CHUNK))
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # paho handles one packet per call: go on while what was read holds more.
        rc = super().loop_read(max_packets)
        for _ in range(MAX_PACKETS_PER_TURN):
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self.buffered:
                break
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        command = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        if self._on_raw is None or qos == 2 or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            end = 2 + int.from_bytes(packet[0:2], "big")
            topic = bytes(packet[2:end])
            mid = 0
            if qos:
                mid = int.from_bytes(packet[end : end + 2], "big")
                end += 2
            # The properties: their length (a variable byte integer), then themselves, skipped.
            length, shift = 0, 0
            while True:
                byte = packet[end]
                end += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise MalformedPacket("properties length longer than 4 bytes")
        except IndexError:
            raise MalformedPacket("PUBLISH shorter than its header") from None
        end += length
        if end > len(packet) or (qos and mid == 0):
            raise MalformedPacket("PUBLISH with a bad topic, packet id or properties length")
        self._on_raw(topic, bytes(packet[end:]), mid, qos, bool(command & 0x01))
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK the QoS 1 messages `mids` (manual_ack) in one write."""
        if mids:
            self._packet_queue(mqtt.PUBACK, b"".join(_PUBACK.pack(0x40, 2, m) for m in mids), 0, 0)


class MqttConnection:
    """Keeps one paho client connected from its own thread until `stop()`.

    `on_connect(session_present)` runs on each (re)connect, `on_message(msg)` for each received
    message (or, instead, `on_raw(topic, payload, mid, qos, retain)`, cheaper and without the
    message's properties), `on_publish(mid, reason_code)` for each acknowledged QoS 1 publish.
    Publishing from other threads is safe (paho locks its queues).
    """

    def __init__(
        self,
        broker: BrokerSettings,
        client_id: str,
        *,
        clean_start: bool = False,
        will: tuple[str, bytes] | None = None,
        manual_ack: bool = False,
        max_inflight: int = 20,
        receive_maximum: int | None = None,
        max_packet_size: int | None = None,
        on_connect: Callable[[bool], None] | None = None,
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        on_raw: RawHandler | None = None,
        on_publish: Callable[[int, int], None] | None = None,
    ) -> None:
        self.broker = broker
        self.clean_start = clean_start
        self.receive_maximum = receive_maximum
        self.max_packet_size = max_packet_size
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.connects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._user_on_connect = on_connect
        self._user_on_publish = on_publish
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
            on_raw=on_raw,
        )
        if broker.username:
            password = broker.password.get_secret_value() if broker.password else None
            client.username_pw_set(broker.username, password)
        if broker.tls is not None:
            client.tls_set(
                ca_certs=str(broker.tls.ca) if broker.tls.ca else None,
                certfile=str(broker.tls.cert) if broker.tls.cert else None,
                keyfile=str(broker.tls.key) if broker.tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(broker.tls.insecure)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        if on_message is not None:
            client.on_message = lambda _c, _u, msg: on_message(msg)
        client.on_publish = self._on_publish
        self.client = client

    @property
    def where(self) -> str:
        return f"mqtt{'s' if self.broker.tls else ''}://{self.broker.host}:{self.broker.port}"

    def _on_connect(self, _client, _userdata, flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker {self.where} refused the connection: {reason_code}"
            log.error(self.last_error)
            return
        self.last_error = None
        self.connects += 1
        self.connected.set()
        log.info("connected to %s (session present: %s)", self.where, flags.session_present)
        if self._user_on_connect:
            self._user_on_connect(bool(flags.session_present))

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if self.connected.is_set():
            log.warning("disconnected from %s: %s", self.where, reason_code)
        self.connected.clear()

    def _on_publish(self, _client, _userdata, mid, reason_code, _properties) -> None:
        if self._user_on_publish:
            self._user_on_publish(mid, reason_code.value)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._thread.start()

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.broker.session_expiry
        if self.receive_maximum is not None:
            props.ReceiveMaximum = self.receive_maximum
        if self.max_packet_size is not None:
            # The broker then never sends us a larger packet: it is dropped before it can
            # reach our memory.
            props.MaximumPacketSize = self.max_packet_size
        return props

    def _hint(self, exc: BaseException | None = None) -> str:
        """Why a connection that reached the server never became an MQTT session."""
        if exc is not None:
            # A plain-MQTT server answers a TLS hello with garbage or by resetting.
            if self.broker.tls is not None and isinstance(
                exc, ssl.SSLError | ConnectionResetError
            ):
                return (f"cannot reach broker {self.where}: {exc}; the server there may not "
                        "speak TLS (use its TLS port, or remove broker.tls)")
            return f"cannot reach broker {self.where}: {exc}"
        if self.broker.tls is None:
            return (f"{self.where} accepted the connection but never answered MQTT: the server "
                    "may expect TLS there (set broker.tls, usually port 8883)")
        return f"{self.where} accepted the connection but never answered MQTT"

    def _run(self) -> None:
        delays = Backoff(self.broker.reconnect_min, self.broker.reconnect_max, jitter=True)
        first = True
        while not self._stop.is_set():
            try:
                if first:
                    self.client.connect(
                        self.broker.host,
                        self.broker.port,
                        keepalive=self.broker.keepalive,
                        clean_start=self.clean_start,
                        properties=self._connect_properties(),
                    )
                    first = False
                else:
                    self.client.reconnect()
            except (OSError, ssl.SSLError) as exc:
                self.last_error = self._hint(exc)
                log.warning("%s", self.last_error)
                self._stop.wait(next(delays))
                continue
            connects = self.connects
            rc = mqtt.MQTT_ERR_SUCCESS
            while not self._stop.is_set() and rc == mqtt.MQTT_ERR_SUCCESS:
                # Bytes already read hold packets: handle them without select, which sees
                # only the socket (and the broker may send nothing until they are acked).
                if self.client.buffered:
                    rc = self.client.loop_read()
                else:
                    rc = self.client.loop(timeout=0.05)
            if self._stop.is_set():
                break
            self.connected.clear()
            if self.connects != connects:
                # A session that was up starts the backoff afresh.
                delays.reset()
            elif self.last_error is None or self.last_error.startswith(self.where):
                self.last_error = self._hint()
                log.warning("%s", self.last_error)
            self._stop.wait(next(delays))
        self.connected.clear()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        """Queue a message (with MQTT v5 `properties`, e.g. a request's Response Topic);
        returns its mid (PUBACK arrives through `on_publish`)."""
        return self.client.publish(topic, payload, qos=qos, retain=retain,
                                   properties=properties).mid

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos=qos)

    def ack(self, mid: int, qos: int) -> None:
        self.client.ack(mid, qos)

    def ack_many(self, mids: Sequence[int]) -> None:
        """Acknowledge the QoS 1 messages `mids` (manual_ack) in one write."""
        self.client.ack_many(mids)

    def stop(self, *, final: tuple[str, bytes] | None = None, timeout: float = 2.0) -> None:
        """Disconnect cleanly, after publishing `final` (retained) if connected."""
        if final is not None and self.connected.is_set():
            info = self.client.publish(final[0], final[1], qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 1)
        if self.client.is_connected():
            self.client.disconnect()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)
