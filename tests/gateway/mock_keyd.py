#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A stand-in for aziot-keyd on the test bus, with the signatures of dbus/org.aziot.Keys1.xml, so
that the gateway's translation can be checked without keyd. Every call is appended to the file
named by argv[1] as one JSON line: method, arguments (bytes as lists), the options it got, and the
uid at the other end of the "client-socket" fd. A key id or handle that starts with "err-<kind>"
makes the call fail with org.aziot.Keys1.Error.<Kind> (or a bus error for "err-bus")."""

import json
import os
import socket
import struct
import sys

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

IFACE = "org.aziot.Keys1"
ERRORS = {
    "err-invalid": (IFACE + ".Error.InvalidParameter",
                    'parameter "handle" has an invalid value\ncaused by: invalid handle'),
    "err-notfound": (IFACE + ".Error.NotFound", "key not found"),
    "err-auth": (IFACE + ".Error.NotAuthorized", "user 1000 is not authorized to access the key err-auth"),
    "err-failed": (IFACE + ".Error.Failed", "the store failed"),
    "err-args": ("org.freedesktop.DBus.Error.InvalidArgs", "unknown option"),
}


class KeysError(dbus.DBusException):
    def __init__(self, name, message):
        super().__init__(message)
        self._dbus_error_name = name


def plain(value):
    if isinstance(value, (dbus.Array, list)) and getattr(value, "signature", None) == "y":
        return [int(b) for b in value]
    if isinstance(value, (dbus.ByteArray, bytes)):
        return list(value)
    if isinstance(value, (dbus.Array, list)):
        return [plain(v) for v in value]
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.String, str)):
        return str(value)
    if isinstance(value, (int, dbus.Int32, dbus.UInt32)):
        return int(value)
    return repr(value)


class Keys(dbus.service.Object):
    def __init__(self, bus, calls_path):
        super().__init__(bus, "/org/aziot/Keys1")
        self.calls_path = calls_path

    def record(self, method, args, options):
        opts = {}
        uid = None
        for name, value in options.items():
            if isinstance(value, dbus.types.UnixFd):
                fd = value.take()
                try:
                    s = socket.socket(fileno=fd)
                    creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                    uid = struct.unpack("3i", creds)[1]
                    s.detach()
                finally:
                    os.close(fd)
                opts[str(name)] = "fd"
            else:
                opts[str(name)] = plain(value)
        with open(self.calls_path, "a") as f:
            f.write(json.dumps({"method": method, "args": [plain(a) for a in args],
                                "options": opts, "client_uid": uid}) + "\n")
        for arg in args:
            if isinstance(arg, str):
                for prefix, (name, message) in ERRORS.items():
                    if arg.startswith(prefix):
                        raise KeysError(name, message)

    @dbus.service.method(IFACE, in_signature="sasa{sv}", out_signature="s")
    def CreateKeyIfNotExists(self, key_id, usage, options):
        self.record("CreateKeyIfNotExists", [key_id, usage], options)
        return "handle-key-" + key_id

    @dbus.service.method(IFACE, in_signature="sayasa{sv}", out_signature="s")
    def ImportKey(self, key_id, key_bytes, usage, options):
        self.record("ImportKey", [key_id, key_bytes, usage], options)
        return "handle-imported-" + key_id

    @dbus.service.method(IFACE, in_signature="sa{sv}", out_signature="s")
    def LoadKey(self, key_id, options):
        self.record("LoadKey", [key_id], options)
        return "handle-key-" + key_id

    @dbus.service.method(IFACE, in_signature="sa{sv}", out_signature="")
    def DeleteKey(self, handle, options):
        self.record("DeleteKey", [handle], options)

    @dbus.service.method(IFACE, in_signature="sasa{sv}", out_signature="s")
    def CreateKeyPairIfNotExists(self, key_id, algorithms, options):
        self.record("CreateKeyPairIfNotExists", [key_id, algorithms], options)
        return "handle-pair-" + key_id

    @dbus.service.method(IFACE, in_signature="sa{sv}", out_signature="s")
    def LoadKeyPair(self, key_id, options):
        self.record("LoadKeyPair", [key_id], options)
        return "handle-pair-" + key_id

    @dbus.service.method(IFACE, in_signature="ssa{sv}", out_signature="")
    def MoveKeyPair(self, source, destination, options):
        self.record("MoveKeyPair", [source, destination], options)

    @dbus.service.method(IFACE, in_signature="sa{sv}", out_signature="")
    def DeleteKeyPair(self, handle, options):
        self.record("DeleteKeyPair", [handle], options)

    @dbus.service.method(IFACE, in_signature="ssa{sv}", out_signature="v")
    def GetKeyPairPublicParameter(self, handle, name, options):
        self.record("GetKeyPairPublicParameter", [handle, name], options)
        if name == "algorithm":
            return dbus.String("ECDSA", variant_level=1)
        return dbus.Array([dbus.Byte(b) for b in b"\x02\x01\xff"], signature="y", variant_level=1)

    @dbus.service.method(IFACE, in_signature="saya{sv}", out_signature="s")
    def CreateDerivedKey(self, handle, data, options):
        self.record("CreateDerivedKey", [handle, data], options)
        return "handle-derived"

    @dbus.service.method(IFACE, in_signature="sa{sv}", out_signature="ay")
    def ExportDerivedKey(self, handle, options):
        self.record("ExportDerivedKey", [handle], options)
        return dbus.ByteArray(b"\x00" * 32)

    @dbus.service.method(IFACE, in_signature="ssaya{sv}", out_signature="ay")
    def Sign(self, handle, algorithm, data, options):
        self.record("Sign", [handle, algorithm, data], options)
        return dbus.ByteArray(b"sig:" + bytes(data))

    @dbus.service.method(IFACE, in_signature="ssaya{sv}", out_signature="ay")
    def Encrypt(self, handle, algorithm, data, options):
        self.record("Encrypt", [handle, algorithm, data], options)
        return dbus.ByteArray(b"\x02" + bytes(data))

    @dbus.service.method(IFACE, in_signature="ssaya{sv}", out_signature="ay")
    def Decrypt(self, handle, algorithm, data, options):
        self.record("Decrypt", [handle, algorithm, data], options)
        return dbus.ByteArray(bytes(data)[1:])


def main():
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()
    name = dbus.service.BusName(IFACE, bus)
    keys = Keys(bus, sys.argv[1])
    print("ready", flush=True)
    GLib.MainLoop().run()
    del name, keys


if __name__ == "__main__":
    main()
