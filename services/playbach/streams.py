"""Redis key names: the one place they are spelled.

=============================  ======  ===============================================
key                            type    holds
=============================  ======  ===============================================
``pb:channels``                set     ids of the channels that exist
``pb:public``                  set     ids of the channels anyone sees listed
``pb:owned:{<user>}``          set     ids of the channels a user made (the cap counts them)
``pb:channel:{<id>}``          hash    its parameters and access (:class:`ChannelParams`,
                                       :class:`ChannelAccess`)
``pb:control``                 stream  parameter changes and errors, for every service
``pb:takes``                   stream  a channel's notes were taken back and written anew
``pb:notes:{<id>}``            stream  note events, written by the channel's inference owner
``pb:audio:{<id>}``            stream  PCM chunks and their note-ons, by its synth owner
``pb:lease:<role>:{<id>}``     string  the replica that owns the channel (SET NX PX)
``pb:replicas:<role>``         zset    live replicas of a role -> last heartbeat (ms)
``pb:synth:{<id>}``            hash    the synth's position: sample, beat, last note seq
``pb:active``                  zset    channel -> last time (ms) anyone listened
``pb:listeners:{<id>}``        hash    gateway replica -> its listener count
``pb:stats:{<id>}``            hash    counters: underruns reported by players, ...
``pb:instruments``             hash    GM program -> name, as the synth's SoundFont says
``pb:epoch``                   string  id of Redis's data set; a new one means data was lost
``pb:token-secret``            string  the gateways' token key, when TOKEN_SECRET is unset
``pb:admin-password``          string  scrypt hash of the generated admin password
``pb:train:jobs``              zset    training job ids -> created (s), newest kept
``pb:train:job:{<id>}``        hash    the job (:class:`playbach.training.TrainJob`)
``pb:train:files:{<id>}``      hash    file name -> uploaded MIDI, until the job ends
``pb:train:progress:{<id>}``   stream  the job's progress (:class:`~.training.TrainProgress`)
``pb:limit:<what>:<address>``  string  a rate limit's count for one client (login, ...)
=============================  ======  ===============================================

A channel's keys (and a training job's) carry its id in braces, Redis Cluster's hash tag:
they all live in one slot, so whatever touches one channel (a transaction, a multi-key DEL)
runs on one shard of a cluster, and channels spread over the shards. No command names keys
of two channels, or a channel's key beside a shared one (``pb:control``, ``pb:active``):
see tests/playbach.
"""

from __future__ import annotations


def text(value: bytes | str | None) -> str | None:
    """A Redis reply (bytes, as the clients return them) as text."""
    return value.decode() if isinstance(value, bytes) else value


def written_ms(entry_id: bytes | str) -> float:
    """When a stream entry was written: the milliseconds of its id."""
    return float(text(entry_id).split("-")[0])


CHANNELS = "pb:channels"
PUBLIC = "pb:public"
CONTROL = "pb:control"
TAKES = "pb:takes"
ACTIVE = "pb:active"
INSTRUMENTS = "pb:instruments"
PING = "pb:ping"
EPOCH = "pb:epoch"
TOKEN_SECRET = "pb:token-secret"
ADMIN_PASSWORD = "pb:admin-password"

TRAIN_JOBS = "pb:train:jobs"

INFERENCE, SYNTH, TRAINER = "inference", "synth", "trainer"


def tag(cid: str) -> str:
    """The channel's hash tag: Redis Cluster hashes only what is inside the braces."""
    return "{" + cid + "}"


def owned(user: str) -> str:
    return f"pb:owned:{tag(user)}"


def channel(cid: str) -> str:
    return f"pb:channel:{tag(cid)}"


def notes(cid: str) -> str:
    return f"pb:notes:{tag(cid)}"


def audio(cid: str) -> str:
    return f"pb:audio:{tag(cid)}"


def lease(role: str, cid: str) -> str:
    return f"pb:lease:{role}:{tag(cid)}"


def replicas(role: str) -> str:
    return f"pb:replicas:{role}"


def synth_position(cid: str) -> str:
    return f"pb:synth:{tag(cid)}"


def listeners(cid: str) -> str:
    return f"pb:listeners:{tag(cid)}"


def stats(cid: str) -> str:
    return f"pb:stats:{tag(cid)}"


def limit(what: str, client: str) -> str:
    """A per-address counter of the gateway's rate limits (``login``, ``downloads``,
    ``guests``): INCR, expiring with its window."""
    return f"pb:limit:{what}:{client}"


def train_job(jid: str) -> str:
    return f"pb:train:job:{tag(jid)}"


def train_files(jid: str) -> str:
    return f"pb:train:files:{tag(jid)}"


def train_progress(jid: str) -> str:
    return f"pb:train:progress:{tag(jid)}"
