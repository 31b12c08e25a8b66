"""IKEv2 numbers (IANA "Internet Key Exchange Version 2 (IKEv2) Parameters", RFC 7296 section 3)."""

from __future__ import annotations

from enum import IntEnum, IntFlag

IKE_VERSION = 0x20  # major 2, minor 0
IKE_HEADER_SIZE = 28
NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 section 2.2


class ExchangeType(IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38
    IKE_INTERMEDIATE = 43


class HeaderFlag(IntFlag):
    NONE = 0
    INITIATOR = 0x08
    VERSION = 0x10
    RESPONSE = 0x20


class PayloadType(IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR_ID = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    GSPM = 49
    SKF = 53


class ProtocolId(IntEnum):
    IKE = 1
    AH = 2
    ESP = 3


class IdType(IntEnum):
    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class AuthMethod(IntEnum):
    RSA_SIG = 1
    SHARED_KEY_MIC = 2
    DSS_SIG = 3
    ECDSA_256 = 9
    ECDSA_384 = 10
    ECDSA_521 = 11
    GENERIC_SECURE_PASSWORD = 12
    NULL = 13
    DIGITAL_SIGNATURE = 14


class TsType(IntEnum):
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8


class NotifyType(IntEnum):
    # errors (< 16384)
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    TEMPORARY_FAILURE = 43
    CHILD_SA_NOT_FOUND = 44
    # status (>= 16384)
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396
    REDIRECT_SUPPORTED = 16406
    MULTIPLE_AUTH_SUPPORTED = 16404
    EAP_ONLY_AUTHENTICATION = 16417
    IKEV2_FRAGMENTATION_SUPPORTED = 16430
    SIGNATURE_HASH_ALGORITHMS = 16431
    CHILDLESS_IKEV2_SUPPORTED = 16418


def notify_name(value: int) -> str:
    try:
        return NotifyType(value).name
    except ValueError:
        kind = "error" if value < 16384 else "status"
        return f"{kind} notify {value}"
