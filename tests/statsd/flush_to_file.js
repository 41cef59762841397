// A StatsD backend (the daemon's plugin interface: init(startup_time, config, events, logger))
// that appends every flush to config.flushFile as one JSON line: the counters, timers and
// gauges exactly as the daemon aggregated them since the previous flush. The test reads these
// instead of the management port's util.inspect dumps, which are not JSON and cut long lists.
'use strict';
const fs = require('fs');

exports.init = function (startupTime, config, events) {
  events.on('flush', function (timestamp, metrics) {
    const line = JSON.stringify({
      timestamp: timestamp,
      counters: metrics.counters,
      timers: metrics.timers,
      gauges: metrics.gauges,
    });
    fs.appendFileSync(config.flushFile, line + '\n');
  });
  return true;
};
