<?php

declare(strict_types=1);

namespace Xio;

/**
 * Binary data: a body sent as application/octet-stream, or one that came back as neither
 * JSON nor text.
 *
 * PHP has one string type for text and octets alike; this wrapper is how the client tells
 * them apart in both directions (a plain string is sent as UTF-8 text).
 */
final class Bytes implements \Stringable, \JsonSerializable
{
    public function __construct(public readonly string $bytes)
    {
    }

    public function length(): int
    {
        return strlen($this->bytes);
    }

    public function __toString(): string
    {
        return $this->bytes;
    }

    /** Refuse to be a JSON value: octets have no JSON form that a reader could tell apart. */
    public function jsonSerialize(): never
    {
        throw new \InvalidArgumentException(
            'Xio\Bytes cannot be part of a JSON body: send it alone, or base64-encode it'
        );
    }
}
