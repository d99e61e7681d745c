<?php

declare(strict_types=1);

namespace Xio;

/** No whole answer within the client's own timeout (per client or per call). */
class Timeout extends TransportError
{
}
