/* The one bean that apicurio-common-app-components-config-index would
 * supply, were it on Maven Central: the list of configuration properties
 * that may change at run time. The test registry changes none, so the list
 * is empty; every property keeps the value it starts with. Not for any other
 * use (tests/cdc/registry/pom.xml says why this project exists). */
package k2mc.cdc.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;

@ApplicationScoped
public class ConfigPropertyListProducer {
    @Produces
    @ApplicationScoped
    DynamicConfigPropertyList dynamicConfigPropertyList() {
        return new DynamicConfigPropertyList(List.of());
    }
}
